import { createHash } from 'node:crypto';
import { constants as fsc, promises as fsp, openSync, realpathSync, readFileSync, type Stats } from 'node:fs';
import { Socket } from 'node:net';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { InvalidInputError } from '../errors.js';

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

class FileSource implements VolumeSource {
  private position = 0;
  constructor(readonly name: string, readonly size: number | undefined, private readonly fh: fsp.FileHandle) {}

  async read(buf: Buffer): Promise<Buffer> {
    const length = buf.length;
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await this.fh.read(buf, filled, length - filled, this.position);
      if (bytesRead === 0) break;
      filled += bytesRead;
      this.position += bytesRead;
    }
    return filled === length ? buf : buf.subarray(0, filled);
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/** Reads a stream (stdin, pipe) into whole chunks: pipes return short reads. */
class StreamSource implements VolumeSource {
  readonly size = undefined;
  private readonly iterator: AsyncIterator<Buffer>;
  private pending: Buffer | undefined;
  private done = false;

  constructor(readonly name: string, private readonly stream: Readable) {
    this.iterator = stream[Symbol.asyncIterator]();
  }

  async read(buf: Buffer): Promise<Buffer> {
    const length = buf.length;
    let filled = 0;
    while (filled < length) {
      if (!this.pending || this.pending.length === 0) {
        if (this.done) break;
        const next = await this.iterator.next();
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
    return filled === length ? buf : buf.subarray(0, filled);
  }

  async close(): Promise<void> {
    // Destroy rather than drain: a cancelled backup must not wait for a stalled writer.
    this.stream.destroy();
  }
}

/** Opens a regular file, a block device, a named pipe, or `-` (the given stdin stream). */
export async function openSource(name: string, stdin: Readable = process.stdin): Promise<VolumeSource> {
  if (name === '-') return new StreamSource('-', stdin);
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
  if (st.isFIFO()) {
    // A named pipe is read like stdin, through the event loop: a cancel never waits for its writer.
    // The blocking open above waited for a writer; this second descriptor keeps the pipe open.
    const fd = openSync(name, fsc.O_RDONLY | fsc.O_NONBLOCK);
    await fh.close();
    return new StreamSource(name, new Socket({ fd, readable: true, writable: false }));
  }
  const size = st.isFile() ? st.size : st.isBlockDevice() ? blockDeviceSize(st) : undefined;
  return new FileSource(name, size, fh);
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
