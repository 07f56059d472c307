import { createHash } from 'node:crypto';
import { constants as fsc, promises as fsp, openSync, realpathSync, readFileSync, type Stats } from 'node:fs';
import { Socket } from 'node:net';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { InvalidInputError, VolumeIOError } from '../errors.js';
import { ALIGN, AlignedMemory, alignedView, alignmentCheckedAt, readTrial } from '../io/aligned.js';
import { sharedBuffer } from '../io/buffer-pool.js';

/** A volume to back up, read front to back in whole chunks. */
export interface VolumeSource {
  /** What the user named: a path, or `-` for stdin. */
  readonly name: string;
  /** Byte length when known up front (files, block devices); undefined for stdin. */
  readonly size: number | undefined;
  /**
   * Fills `into` from the current position and returns the filled part; it is shorter than
   * `into` only at the end of the volume.
   */
  read(into: Buffer): Promise<Buffer>;
  /**
   * Whether several reads may be in flight at once: each call then takes the next part of the
   * volume in call order (files and devices; not streams).
   */
  readonly parallelReads: boolean;
  /**
   * Memory of `length` bytes this source reads into fastest (aligned for O_DIRECT where the
   * source is read that way), shared so that worker threads can use it in place.
   */
  buffer(length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/** Size of a block device from sysfs (fstat reports 0 for devices). */
export function blockDeviceSize(st: Stats): number | undefined {
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((Math.floor(st.rdev / 4096) & 0xfff00) >>> 0);
  try {
    return Number(readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * 512;
  } catch {
    return undefined;
  }
}

/** A failed read of the volume (I/O error, a pipe's writer failing), naming where. */
function readError(name: string, offset: number, err: unknown): VolumeIOError {
  return new VolumeIOError(`${name}: cannot read at offset ${offset}: ${(err as Error).message}`, { cause: err, offset });
}

/**
 * A regular file or block device. Read through O_DIRECT where the filesystem allows it: no
 * page cache is filled (holes of a sparse file cost a memset, not cache pages to allocate and
 * copy), and the data path gets the memory bandwidth the cache copy took.
 */
class FileSource implements VolumeSource {
  private position = 0;
  private readonly aligned = new AlignedMemory();
  /** Where trial reads for aligned memory are made (found once). */
  private trialPosition: Promise<number> | undefined;
  /** Set once an O_DIRECT read into this source's buffers was refused. */
  private refused = false;

  constructor(
    readonly name: string,
    readonly size: number | undefined,
    private readonly fh: fsp.FileHandle,
    private readonly direct: fsp.FileHandle | undefined,
  ) {}

  /** Whether every read into this source's buffers so far bypassed the page cache. */
  get readsDirectly(): boolean {
    return this.direct !== undefined && !this.refused;
  }

  async buffer(length: number): Promise<Buffer> {
    const direct = this.direct;
    const size = this.size ?? 0;
    if (direct && size >= ALIGN) {
      this.trialPosition ??= alignmentCheckedAt(direct, size);
      const view = await alignedView(sharedBuffer(length + ALIGN), length, readTrial(direct, await this.trialPosition));
      if (view) return this.aligned.add(view);
    }
    return sharedBuffer(length);
  }

  readonly parallelReads = true;

  async read(buf: Buffer): Promise<Buffer> {
    const length = buf.length;
    const start = this.position; // taken now: reads in flight together fill consecutive parts
    this.position += length;
    let filled = 0;
    while (filled < length) {
      const bytesRead = await this.readAt(buf.subarray(filled), start + filled).catch((err: unknown) => {
        throw readError(this.name, start + filled, err);
      });
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return filled === length ? buf : buf.subarray(0, filled);
  }

  private async readAt(into: Buffer, position: number): Promise<number> {
    if (this.direct && position % ALIGN === 0 && into.length % ALIGN === 0 && this.aligned.isAligned(into)) {
      try {
        return (await this.direct.read(into, 0, into.length, position)).bytesRead;
      } catch (err) {
        // Refused after all (memory the trial misjudged, a device with larger blocks): this
        // memory is read through the cache from now on. The handle stays open until close():
        // other reads in flight use it.
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        this.aligned.forget(into);
        this.refused = true;
      }
    }
    return (await this.fh.read(into, 0, into.length, position)).bytesRead;
  }

  async close(): Promise<void> {
    await this.direct?.close().catch(() => {});
    await this.fh.close();
  }
}

/** Reads a stream (stdin, pipe) into whole chunks: pipes return short reads. */
class StreamSource implements VolumeSource {
  readonly size = undefined;
  readonly parallelReads = false;
  private readonly iterator: AsyncIterator<Buffer>;
  private pending: Buffer | undefined;
  private done = false;
  /** Bytes handed out so far. */
  private position = 0;

  constructor(readonly name: string, private readonly stream: Readable) {
    this.iterator = stream[Symbol.asyncIterator]();
  }

  async buffer(length: number): Promise<Buffer> {
    return sharedBuffer(length);
  }

  async read(buf: Buffer): Promise<Buffer> {
    const length = buf.length;
    let filled = 0;
    while (filled < length) {
      if (!this.pending || this.pending.length === 0) {
        if (this.done) break;
        const next = await this.iterator.next().catch((err: unknown) => {
          throw readError(this.name, this.position + filled, err);
        });
        if (next.done) {
          this.done = true;
          break;
        }
        this.pending = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
      }
      const n = Math.min(this.pending.length, length - filled);
      this.pending.copy(buf, filled, 0, n);
      this.pending = this.pending.subarray(n);
      filled += n;
    }
    this.position += filled;
    return filled === length ? buf : buf.subarray(0, filled);
  }

  async close(): Promise<void> {
    // Destroy rather than drain: a cancelled backup must not wait for a stalled writer.
    this.stream.destroy();
  }
}

/**
 * A named pipe, read like stdin through the event loop: opened without waiting for a writer
 * (a blocking open(2) could not be cancelled), it yields data once one writes.
 */
function pipeSource(name: string): VolumeSource {
  let fd: number;
  try {
    fd = openSync(name, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch (err) {
    throw new InvalidInputError(`cannot open source ${name}: ${(err as Error).message}`);
  }
  return new StreamSource(name, new Socket({ fd, readable: true, writable: false }));
}

/** Opens a regular file, a block device, a named pipe, or `-` (the given stdin stream). */
export async function openSource(name: string, stdin: Readable = process.stdin): Promise<VolumeSource> {
  if (name === '-') return new StreamSource('-', stdin);
  if ((await fsp.stat(name).catch(() => undefined))?.isFIFO()) return pipeSource(name);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(name, fsc.O_RDONLY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file or device' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new InvalidInputError(`cannot open source ${name}: ${why}`);
  }
  const st = await fh.stat();
  if (st.isDirectory()) {
    await fh.close();
    throw new InvalidInputError(`source ${name} is a directory, not a volume (expected a file, a block device or -)`);
  }
  if (st.isCharacterDevice()) {
    await fh.close();
    throw new InvalidInputError(
      `source ${name} is a character device (a terminal, /dev/zero...), not a volume (expected a file, a block device, a named pipe or -)`,
    );
  }
  if (st.isFIFO()) {
    await fh.close(); // it became a pipe after the look above
    return pipeSource(name);
  }
  const size = st.isFile() ? st.size : st.isBlockDevice() ? blockDeviceSize(st) : undefined;
  const direct = await fsp.open(name, fsc.O_RDONLY | fsc.O_DIRECT).catch(() => undefined);
  return new FileSource(name, size, fh, direct);
}

/** The canonical path of a source, used to derive its default volume id. */
export function canonicalSourcePath(name: string): string {
  try {
    return realpathSync(name);
  } catch {
    return path.resolve(name);
  }
}

/** A stable volume id for a source path: a name-based (version 5 style) UUID of its canonical path. */
export function volumeIdForPath(canonical: string): string {
  const h = createHash('sha1').update('chunkvault-volume:').update(canonical).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
