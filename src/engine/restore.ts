/**
 * Restore replays a chain (full backup, then its incrementals) as one extent map: every
 * block of the target comes from the newest object covering it, each needed object is
 * read once, checked (length, MD5, SHA-256 of every block) and its blocks written once.
 */
import { constants as fsc, openSync, promises as fsp } from 'node:fs';
import { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { retriesSoFar, type Backend } from '../backends/backend.js';
import type { BackupRecord, Catalog } from '../catalog/catalog.js';
import {
  CancelledError, ChunkvaultError, ConflictError, IntegrityError, InvalidInputError, NotFoundError, VolumeIOError,
} from '../errors.js';
import type { BackupMetadata, ObjectEntry, Sha256File } from '../format/metadata.js';
import type { RestoreRun } from './chunk-work.js';
import { ProgressReporter, type ProgressOptions } from './progress.js';
import { checkListing, locate, readMetadata, readSha256File, type BackupLocation } from './repository.js';
import { blockDeviceSize } from './source.js';
import { processAlive, THIS_PROCESS } from './processes.js';
import { withPool, type WorkerPool } from './worker-pool.js';
import { sharedBufferPool } from '../io/buffer-pool.js';
import { DirectWriter } from '../io/direct-writer.js';
import { OrderedStream } from '../io/ordered-stream.js';

const IN_FLIGHT_BYTES = 320 * 1024 * 1024;
const PIPE_READER_POLL_MS = 100;
/** A stream restore may read split objects again up to this many times the volume's size. */
const MAX_REREAD = 4;

/** The backups to replay, full first, ending with `id`. */
export async function resolveChain(catalog: Catalog, id: string): Promise<BackupRecord[]> {
  const chain: BackupRecord[] = [];
  const seen = new Set<string>();
  for (let cur: string | null = id; cur !== null; ) {
    if (seen.has(cur)) throw new IntegrityError(`the chain of backup ${id} has a cycle at backup ${cur}`, { backupId: id });
    seen.add(cur);
    const rec = await catalog.get(cur);
    if (!rec || rec.status === 'deleted') {
      throw new NotFoundError(
        cur === id ? `backup ${id} is not in the catalog` : `backup ${cur}, an ancestor of ${id}, is not in the catalog`,
        { backupId: cur },
      );
    }
    // `restoring`: other restores may read the same backups at the same time.
    if (rec.status !== 'available' && rec.status !== 'restoring') {
      throw new ConflictError(`backup ${rec.id} is ${rec.status}, not available`, { backupId: rec.id });
    }
    chain.unshift(rec);
    cur = rec.parent_id;
  }
  return chain;
}

export interface Layer {
  loc: BackupLocation;
  meta: BackupMetadata;
  sha: Sha256File;
  bytes: number;
}

/**
 * The exact volume length of each layer, from the repository alone: a full backup's objects
 * cover the volume; an incremental's sha256file counts its blocks and its last block is
 * either stored or, unchanged, as long as the parent's block at that index.
 */
export function layerLength(meta: BackupMetadata, sha: Sha256File, parent: Layer | undefined, id: string): number {
  const bs = sha.blockSize;
  const n = sha.sha256s.length;
  const end = meta.objects.reduce((m, o) => Math.max(m, o.offset + o.length), 0);
  const fail = (what: string): never => {
    throw new IntegrityError(`backup ${id}: ${what}`, { backupId: id });
  };
  if (n === 0) fail('its sha256file lists no blocks');
  if (end > n * bs) fail(`objects reach offset ${end}, past the ${n} blocks of its sha256file`);
  if (!parent || end > (n - 1) * bs) {
    if (end <= (n - 1) * bs) fail(`objects end at ${end} but its sha256file lists ${n} blocks of ${bs} bytes`);
    return end;
  }
  const parentBlocks = parent.sha.sha256s.length;
  if (n - 1 < parentBlocks - 1) return n * bs;
  if (n - 1 === parentBlocks - 1) return parent.bytes;
  return fail(`block ${n - 1} lies past its parent's volume but no object stores it`);
}

export interface RestorePlan {
  chain: BackupRecord[];
  layers: Layer[];
  bytes: number;
  blockSize: number;
  /** The objects to read, in volume order, each with the blocks it provides. */
  reads: { layer: Layer; object: ObjectEntry; runs: RestoreRun[] }[];
}

export async function planRestore(backend: Backend, catalog: Catalog, id: string, signal?: AbortSignal): Promise<RestorePlan> {
  const chain = await resolveChain(catalog, id);
  const layers: Layer[] = [];
  for (const rec of chain) {
    const loc = locate(rec);
    if (rec.repository !== backend.url) {
      throw new InvalidInputError(`backup ${rec.id} lives in ${rec.repository}, not in ${backend.url} (use --repo)`, {
        backupId: rec.id,
      });
    }
    const meta = await readMetadata(backend, loc, { signal });
    const sha = await readSha256File(backend, loc, { signal });
    const parent = layers.at(-1);
    if (parent && sha.blockSize !== parent.sha.blockSize) {
      throw new IntegrityError(`backup ${rec.id}: sha block size ${sha.blockSize} differs from its parent's ${parent.sha.blockSize}`, {
        backupId: rec.id,
      });
    }
    await checkListing(backend, loc, meta, { signal });
    layers.push({ loc, meta, sha, bytes: layerLength(meta, sha, parent, rec.id) });
  }
  const target = layers.at(-1)!;
  const bs = target.sha.blockSize;
  const nBlocks = Math.ceil(target.bytes / bs);
  if (nBlocks !== target.sha.sha256s.length) {
    throw new IntegrityError(`backup ${id}: volume of ${target.bytes} bytes needs ${nBlocks} hashes, sha256file has ${target.sha.sha256s.length}`, {
      backupId: id,
    });
  }
  // owner[block] = index into `all` of the newest object covering that block.
  const all: { layer: Layer; object: ObjectEntry }[] = [];
  const owner = new Int32Array(nBlocks).fill(-1);
  for (const layer of layers) {
    for (const object of layer.meta.objects) {
      if (object.offset % bs) {
        throw new IntegrityError(`object ${object.name} of backup ${layer.loc.id}: offset ${object.offset} is not a multiple of the sha block size ${bs}`, {
          backupId: layer.loc.id, object: object.name, offset: object.offset,
        });
      }
      const k = all.push({ layer, object }) - 1;
      const last = Math.min(Math.ceil((object.offset + object.length) / bs), nBlocks);
      for (let b = object.offset / bs; b < last; b++) owner[b] = k;
    }
  }
  const runsOf = new Map<number, RestoreRun[]>();
  for (let b = 0; b < nBlocks; ) {
    const k = owner[b]!;
    if (k < 0) throw new IntegrityError(`backup ${id}: no object of its chain covers volume offset ${b * bs}`, { backupId: id, offset: b * bs });
    let e = b + 1;
    while (e < nBlocks && owner[e] === k) e++;
    const runs = runsOf.get(k) ?? [];
    runs.push({ block: b, count: e - b, hashes: target.sha.sha256s.slice(b, e) });
    runsOf.set(k, runs);
    b = e;
  }
  const reads = [...runsOf.entries()]
    .sort((a, b) => a[1][0]!.block - b[1][0]!.block)
    .map(([k, runs]) => ({ ...all[k]!, runs }));
  return { chain, layers, bytes: target.bytes, blockSize: bs, reads };
}

export interface RestoreOptions extends ProgressOptions {
  backend: Backend;
  catalog: Catalog;
  backupId: string;
  /** Output path (a file, a block device or a named pipe); omitted for verify. */
  target?: string;
  /**
   * Write the volume to this stream instead (every byte in order, zeros included); `target`
   * then only names it in messages.
   */
  stream?: Writable;
  /** Write into an existing file or block device in place (no temporary file, no holes). */
  toExisting?: boolean;
  /** Replace an existing regular file (atomically, via a temporary file). */
  force?: boolean;
  signal?: AbortSignal;
  pool?: WorkerPool;
  threads?: number;
  /** Names the temporary file (default: random), so that others can find it if this process dies. */
  tempTag?: string;
  /** Memory for objects in flight (compressed and decompressed); default 320 MiB. */
  inFlightBytes?: number;
  /**
   * Asked at the end whether to give the backup its `available` status back (a service worker
   * that lost its job meanwhile must not: another may be restoring it by then).
   */
  release?: () => Promise<boolean>;
}

export interface RestoreResult {
  id: string;
  chain: string[];
  bytes: number;
  objectsRead: number;
  bytesWritten: number;
  seconds: number;
  bytesPerSecond: number;
  target: string | null;
  /** Storage calls retried after transient faults. */
  retries: number;
}

interface Output {
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

async function openOutput(
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
  const out = await DirectWriter.open(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o644).catch((err: Error) => {
    throw new InvalidInputError(`cannot create ${target}: ${err.message}`);
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
function streamOutput(name: string, stream: Writable, close: boolean, signal?: AbortSignal): Output {
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

/**
 * The reads of `reads` cut into stretches in volume order: each object once for every run of
 * its blocks that no other object's blocks interrupt. Written in order, no stretch waits for
 * another to finish, at the cost of reading a split object once per stretch.
 */
function stretchesInOrder(reads: RestorePlan['reads']): RestorePlan['reads'] {
  const runs = reads.flatMap((read) => read.runs.map((run) => ({ read, run }))).sort((a, b) => a.run.block - b.run.block);
  const out: RestorePlan['reads'] = [];
  for (const { read, run } of runs) {
    const last = out.at(-1);
    if (last && last.object === read.object) last.runs.push(run);
    else out.push({ layer: read.layer, object: read.object, runs: [run] });
  }
  return out;
}

/**
 * The most objects whose blocks are open at once when the volume is written in order: an
 * object of the full backup whose middle an incremental replaced stays open (in memory) until
 * that incremental's object is written.
 */
function mostOpenAtOnce(reads: RestorePlan['reads']): number {
  const edges: [number, number][] = [];
  for (const { runs } of reads) {
    const last = runs.at(-1)!;
    edges.push([runs[0]!.block, 1], [last.block + last.count, -1]);
  }
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, d] of edges) most = Math.max(most, (open += d));
  return most;
}

/** Restores (or, without a target, verifies) a backup and its chain. */
export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  return withPool(o, (pool) => restoreWith(o, pool));
}

async function restoreWith(o: RestoreOptions, pool: WorkerPool): Promise<RestoreResult> {
  const retriesBefore = retriesSoFar(o.backend);
  if (o.target === undefined && o.stream === undefined) {
    return replay(o, pool, await planRestore(o.backend, o.catalog, o.backupId, o.signal), retriesBefore);
  }
  // While it is written somewhere the backup is `restoring`, and a delete is refused (unless
  // this process dies: then its record names a writer that is gone). Restores run side by side;
  // a backup in any other status is refused by the plan.
  const holding = await o.catalog.update(o.backupId, { status: 'restoring', worker: THIS_PROCESS }, ['available']);
  try {
    return await replay(o, pool, await planRestore(o.backend, o.catalog, o.backupId, o.signal), retriesBefore);
  } finally {
    if (holding && (!o.release || (await o.release()))) {
      await o.catalog.update(o.backupId, { status: 'available', worker: null }, ['restoring']).catch(() => {});
    }
  }
}

/** Reads, checks and (unless verifying) writes every object of the plan. */
async function replay(o: RestoreOptions, pool: WorkerPool, plan: RestorePlan, retriesBefore: number): Promise<RestoreResult> {
  const verifyOnly = o.target === undefined && o.stream === undefined;
  const progress = new ProgressReporter(verifyOnly ? 'verify' : 'restore', o.backupId, plan.bytes, o);
  const out = verifyOnly
    ? undefined
    : o.stream
      ? streamOutput(o.target ?? 'stream', o.stream, false, o.signal)
      : await openOutput(o.target!, plan.bytes, {
        toExisting: !!o.toExisting, force: !!o.force, tag: o.tempTag ?? randomBytes(6).toString('hex'), signal: o.signal,
      });
  const bs = plan.blockSize;
  let bytesWritten = 0;
  let reads = plan.reads;
  const pending: Promise<void>[] = [];
  try {
    // Enough objects in flight that reads, checks and writes overlap and no worker waits;
    // each holds up to its compressed and its decompressed bytes, so their sizes bound it too.
    const largest = plan.reads.reduce((m, r) => Math.max(m, r.object.length), 1);
    const budget = o.inFlightBytes ?? IN_FLIGHT_BYTES;
    let depth = Math.max(1, Math.min(pool.size * 8, Math.floor(budget / (2 * largest))));
    if (out?.ordered) {
      // Objects are started in the order of their first block, so the one holding the next
      // bytes always gets a buffer if there is one for every object open at once.
      const open = mostOpenAtOnce(reads);
      if (open > 1 && open * largest > budget) {
        // Too large to hold: an object split by incrementals is read again for each of its stretches.
        reads = stretchesInOrder(plan.reads);
        const bytesRead = reads.reduce((n, r) => n + r.object.length, 0);
        if (bytesRead > MAX_REREAD * Math.max(plan.bytes, largest)) {
          throw new InvalidInputError(
            `writing backup ${o.backupId} in order to ${o.target ?? 'a stream'} would hold ${open} objects of up to ${largest} bytes ` +
              `at once, or read ${bytesRead} bytes of objects for a ${plan.bytes}-byte volume (its incrementals replace many parts of ` +
              `larger objects); restore into a file or a block device`,
            { backupId: o.backupId },
          );
        }
      } else {
        depth = Math.max(depth, open);
      }
    }
    // Workers decompress into these and the writer writes from them: made once, reused.
    const buffers = sharedBufferPool(largest, depth, out?.alignedBuffer && ((n) => out.alignedBuffer!(n)));
    const handle = async (read: RestorePlan['reads'][number]) => {
      const into = await buffers.acquire();
      try {
        await restoreObject(read, into);
      } finally {
        buffers.release(into);
      }
    };
    const restoreObject = async ({ layer, object, runs }: RestorePlan['reads'][number], into: Buffer) => {
      const stored = await o.backend.get(layer.loc.container, object.name, { signal: o.signal }).catch((err: unknown) => {
        // Listed a moment ago, gone now (lost, or quarantined by the store): the backup is damaged.
        if (!(err instanceof NotFoundError)) throw err;
        throw new IntegrityError(`backup ${layer.loc.id}: object ${object.name} (offset ${object.offset}) listed in its metadata is missing from container ${layer.loc.container}`, {
          backupId: layer.loc.id, object: object.name, offset: object.offset,
        });
      });
      const r = await pool.run({
        kind: 'restore', backupId: layer.loc.id, name: object.name, data: stored, compression: object.compression,
        offset: object.offset, length: object.length, md5: object.md5, blockSize: bs, volumeBytes: plan.bytes, runs, into,
        fillZeros: out !== undefined && !out.sparse,
      });
      const sparse = out?.sparse ?? true;
      let first = 0; // index of this run's first block in r.zero
      for (const run of runs) {
        // Write maximal stretches of blocks; zero blocks stay holes in a new (sparse) file.
        let start = -1;
        for (let i = 0; i <= run.count; i++) {
          const keep = i < run.count && !(sparse && r.zero[first + i] === 1);
          if (keep && start < 0) start = i;
          if (!keep && start >= 0) {
            const from = (run.block + start) * bs;
            const to = Math.min((run.block + i) * bs, plan.bytes);
            if (out) {
              await out.write(into.subarray(from - object.offset, to - object.offset), from);
              bytesWritten += to - from;
            }
            start = -1;
          }
        }
        first += run.count;
        progress.add(Math.min(run.count * bs, plan.bytes - run.block * bs), 0);
      }
      progress.add(0, 1);
    };
    // Up to `depth` objects in flight, a new one started as soon as any finishes.
    const running = new Set<Promise<void>>();
    let failed = false;
    for (const read of reads) {
      o.signal?.throwIfAborted();
      if (failed) break;
      const p: Promise<void> = handle(read).then(
        () => void running.delete(p),
        (err) => {
          failed = true;
          running.delete(p);
          throw err;
        },
      );
      p.catch(() => {});
      pending.push(p);
      running.add(p);
      if (running.size >= depth) await Promise.race(running);
    }
    await Promise.all(pending);
    await out?.commit();
  } catch (err) {
    // Objects still in flight finish (or fail) before the output goes: nothing keeps running
    // against a closed file or a stopped pool once this call has returned. Pieces of an ordered
    // output that wait for bytes the failed object held would wait forever: they fail now.
    out?.interrupt?.(err as Error);
    await Promise.allSettled(pending);
    await out?.abort().catch(() => {});
    throw err;
  } finally {
    progress.stop();
  }
  progress.end();
  const seconds = progress.elapsedSeconds();
  return {
    id: o.backupId, chain: plan.chain.map((c) => c.id), bytes: plan.bytes, objectsRead: reads.length,
    bytesWritten, seconds, bytesPerSecond: seconds > 0 ? plan.bytes / seconds : 0, target: o.target ?? null,
    retries: retriesSoFar(o.backend) - retriesBefore,
  };
}
