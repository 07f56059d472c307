/**
 * Where a restore writes: a new file (temporary name, linked into place when complete), an
 * existing file or block device in place (locked, or opened exclusively), or a stream (standard
 * output, a named pipe) that takes every byte in order.
 */
import { constants as fsc, openSync, promises as fsp } from 'node:fs';
import { Socket } from 'node:net';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancelledError, ChunkvaultError, ConflictError, InvalidInputError, VolumeIOError } from '../errors.js';
import { DirectWriter } from '../io/direct-writer.js';
import { OrderedStream } from '../io/ordered-stream.js';
import { processAlive, THIS_PROCESS } from './processes.js';
import { blockDeviceSize } from './source.js';

const PIPE_READER_POLL_MS = 100;

export interface Output {
  /** Whether zero blocks may be left as holes. */
  sparse: boolean;
  /** Whether pieces must come in volume order (they wait for the ones before them). */
  ordered: boolean;
  /** Memory this output writes from fastest (aligned for O_DIRECT), if it has such. */
  alignedBuffer?(length: number): Promise<Buffer | undefined>;
  write(data: Uint8Array, position: number): Promise<void>;
  commit(): Promise<void>;
  /** Stops waiting: writes held for pieces that will never come fail with `err` (ordered outputs). */
  interrupt?(err: Error): void;
  abort(): Promise<void>;
}

/** Runs a step on the target; a failure (disk full, I/O error) names the target and the step. */
async function onTarget<T>(target: string, what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof ChunkvaultError) throw err;
    throw new VolumeIOError(`${target}: cannot ${what}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Puts the finished temporary file at `target` unless something appeared there meanwhile
 * (another restore, a user's file): that is left as it is. Where hard links are not supported,
 * the name is checked just before a rename.
 */
async function linkNew(tmp: string, target: string): Promise<void> {
  const appeared = () => new ConflictError(`${target} appeared while the restore ran; it was left as it is (restore again, with --force to replace it)`);
  try {
    await fsp.link(tmp, target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw appeared();
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EMLINK') throw err;
    if (await fsp.lstat(target).then(() => true, () => false)) throw appeared();
    await fsp.rename(tmp, target);
    return;
  }
  await fsp.unlink(tmp);
}

/**
 * Takes `.<name>.chunkvault-lock` beside a file restored in place (naming this process), so
 * that a second restore into it is refused; one left by a process that died is taken over.
 * Where the directory cannot hold it (read-only), the restore goes on unlocked.
 */
async function lockTarget(target: string): Promise<() => Promise<void>> {
  const lock = path.join(path.dirname(path.resolve(target)), `.${path.basename(target)}.chunkvault-lock`);
  for (let tries = 0; tries < 2; tries++) {
    try {
      await fsp.writeFile(lock, THIS_PROCESS, { flag: 'wx' });
      return () => fsp.rm(lock, { force: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') return async () => {};
      if (code !== 'EEXIST') throw err;
      const holder = (await fsp.readFile(lock, 'utf8').catch(() => '')).trim();
      if (holder && processAlive(holder)) throw new ConflictError(`${target} is being restored into by ${holder} (its lock is ${lock})`);
      await fsp.rm(lock, { force: true }); // its holder died
    }
  }
  throw new ConflictError(`${target} is being restored into by another process (its lock is ${lock})`);
}

/** Where a restore into a new file writes until it is complete. */
export function restoreTempPath(target: string, tag: string): string {
  return path.join(path.dirname(path.resolve(target)), `.${path.basename(target)}.chunkvault-tmp-${tag}`);
}

/**
 * Opens a named pipe for writing once a reader has opened it, without blocking a thread in
 * open(2) (which no cancel could interrupt), and writes to it through the event loop.
 */
async function openPipe(target: string, signal?: AbortSignal): Promise<Socket> {
  for (;;) {
    try {
      return new Socket({ fd: openSync(target, fsc.O_WRONLY | fsc.O_NONBLOCK), readable: false, writable: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw new VolumeIOError(`${target}: cannot open: ${(err as Error).message}`, { cause: err });
    }
    // No reader yet. A cancel ends the wait with its own reason.
    await sleep(PIPE_READER_POLL_MS, undefined, { signal }).catch(() => signal!.throwIfAborted());
  }
}

export async function openOutput(
  target: string, bytes: number, o: { toExisting: boolean; force: boolean; tag: string; signal?: AbortSignal },
): Promise<Output> {
  const { toExisting, force, tag } = o;
  const st = await fsp.stat(target).catch(() => undefined);
  // A named pipe takes the volume as a stream, whether or not it "exists".
  if (st?.isFIFO()) return streamOutput(target, await openPipe(target, o.signal), true, o.signal);
  if (st?.isDirectory()) throw new InvalidInputError(`${target} is a directory, not a file, a block device or a named pipe`);
  if (toExisting) {
    if (!st) throw new InvalidInputError(`--to-existing: ${target} does not exist`);
    if (st.isBlockDevice()) {
      const capacity = blockDeviceSize(st);
      if (capacity !== undefined && capacity < bytes) {
        throw new InvalidInputError(`${target} holds ${capacity} bytes; the backup's volume has ${bytes}`);
      }
    } else if (!st.isFile()) {
      throw new InvalidInputError(`--to-existing: ${target} is neither a regular file nor a block device`);
    }
    // A block device is opened exclusively: one that is mounted, or that another restore is
    // writing, is refused. A file is locked by a lock file beside it, for the same reason.
    const exclusive = st.isBlockDevice() ? fsc.O_EXCL : 0;
    const unlock = st.isFile() ? await lockTarget(target) : async () => {};
    const out = await onTarget(target, 'open', () => DirectWriter.open(target, fsc.O_RDWR | exclusive).catch((err) => {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') throw err;
      throw new ConflictError(`${target} is in use (mounted, or opened exclusively by another process such as a restore)`);
    })).catch(async (err) => {
      await unlock();
      throw err;
    });
    // In place, as on a larger block device: a smaller file grows, bytes past the volume stay.
    return fileOutput(target, out, { sparse: false, size: st.isFile() && st.size < bytes ? bytes : undefined, finish: unlock, cleanUp: unlock });
  }
  if (st && !(force && st.isFile())) {
    throw new InvalidInputError(
      `${target} exists (use --to-existing to write into it${st.isFile() ? ', or --force to replace it' : ''})`,
    );
  }
  const dir = path.dirname(path.resolve(target));
  const tmp = restoreTempPath(target, tag);
  const out = await DirectWriter.open(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o644).catch((err: NodeJS.ErrnoException) => {
    // A path that cannot be made is the caller's to fix; a full or failing disk is a volume I/O fault.
    const Kind = ['ENOSPC', 'EIO', 'EDQUOT'].includes(err.code ?? '') ? VolumeIOError : InvalidInputError;
    throw new Kind(`cannot create ${target}: ${err.message}`, { cause: err });
  });
  return fileOutput(target, out, {
    sparse: true,
    size: bytes,
    async finish() {
      await (force ? fsp.rename(tmp, target) : linkNew(tmp, target));
      const d = await fsp.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
      await d.sync().finally(() => d.close());
    },
    cleanUp: () => fsp.rm(tmp, { force: true }),
  });
}

/**
 * A file or block device written through `out` at any position, first sized to `size` bytes
 * (files); once the data is synced and closed, `finish` completes it; `cleanUp` undoes it.
 */
async function fileOutput(
  target: string,
  out: DirectWriter,
  o: { sparse: boolean; size?: number; finish?: () => Promise<void>; cleanUp?: () => Promise<void> },
): Promise<Output> {
  const abort = async () => {
    await out.close().catch(() => {});
    await o.cleanUp?.();
  };
  if (o.size !== undefined) {
    const size = o.size;
    await onTarget(target, `size it to ${size} bytes`, () => out.fh.truncate(size)).catch(async (err) => {
      await abort();
      throw err;
    });
  }
  return {
    sparse: o.sparse, ordered: false, alignedBuffer: (n) => out.sharedAlignedBuffer(n),
    write: (data, position) => onTarget(target, `write at offset ${position}`, () => out.write(data, position)),
    commit: () => onTarget(target, 'finish writing it', async () => {
      await out.sync();
      await out.close();
      await o.finish?.();
    }),
    abort,
  };
}

/** A stream output (standard output, a named pipe): every byte in order, nothing to take back. */
export function streamOutput(name: string, stream: Writable, close: boolean, signal?: AbortSignal): Output {
  const ordered = new OrderedStream(stream);
  // A cancel does not wait for a reader that stopped reading.
  const onAbort = () => {
    ordered.abort(signal!.reason instanceof Error ? signal!.reason : new CancelledError('cancelled'));
    if (close) stream.destroy();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const done = () => signal?.removeEventListener('abort', onAbort);
  return {
    sparse: false, ordered: true,
    write: (data, position) => onTarget(name, `write at offset ${position}`, () => ordered.write(data, position)),
    commit: () => onTarget(name, 'finish writing it', async () => {
      if (close) await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
      ordered.detach();
      done();
    }),
    interrupt: (err) => ordered.abort(err),
    // After a failure the listener stays: a late 'error' (a broken pipe) must not go unhandled.
    abort: async () => {
      done();
      if (close) stream.destroy();
    },
  };
}
