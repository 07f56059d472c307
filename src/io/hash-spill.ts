/**
 * A backup's digests, collected in volume order: in memory while they are few, and past that in
 * a temporary file with no name (created and unlinked at once, so that nothing is left behind
 * however the process ends). A volume's hashes are 32 bytes a block, a gigabyte for a terabyte
 * at 32 KiB blocks; they are read back once, to write the sha256file.
 */
import { promises as fsp, readSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { VolumeIOError } from '../errors.js';
import { DIGEST_BYTES, HashListBuilder, type Digests } from '../format/hash-list.js';

/** Digests held in memory before they go to a file: 8 MiB, those of an 8 GiB volume at 32 KiB. */
export const MEMORY_DIGESTS = 256 * 1024;

export interface HashSpillOptions {
  /** Digests held in memory at most. */
  memoryDigests?: number;
  /** Where the file goes (default: the system's temporary directory, $TMPDIR). */
  dir?: string;
}

export class HashSpill implements Digests {
  private memory: HashListBuilder | undefined;
  private file: fsp.FileHandle | undefined;
  private count = 0;
  private readonly memoryDigests: number;
  private readonly dir: string;

  constructor(o: HashSpillOptions = {}) {
    this.memoryDigests = o.memoryDigests ?? MEMORY_DIGESTS;
    this.dir = o.dir ?? tmpdir();
    this.memory = new HashListBuilder();
  }

  get length(): number {
    return this.count;
  }

  /** Where the digests are: memory, or the file. */
  get spilled(): boolean {
    return this.file !== undefined;
  }

  /** Appends packed digests (calls are not to overlap). */
  async append(digests: Uint8Array): Promise<void> {
    if (digests.length % DIGEST_BYTES) throw new RangeError(`${digests.length} bytes are not a whole number of SHA-256 digests`);
    try {
      if (this.memory && this.count + digests.length / DIGEST_BYTES > this.memoryDigests) {
        const held = this.memory.list().bytes;
        this.file = await this.openFile();
        this.memory = undefined;
        await this.write(held, 0);
      }
      if (this.memory) this.memory.append(digests);
      else await this.write(digests, this.count * DIGEST_BYTES);
    } catch (err) {
      throw this.failed(err);
    }
    this.count += digests.length / DIGEST_BYTES;
  }

  read(start: number, end: number): Uint8Array {
    start = Math.max(0, Math.min(start, this.count));
    end = Math.max(start, Math.min(end, this.count));
    if (this.memory) return this.memory.list().read(start, end);
    const out = Buffer.allocUnsafe((end - start) * DIGEST_BYTES);
    for (let at = 0; at < out.length; ) {
      let n: number;
      try {
        n = readSync(this.file!.fd, out, at, out.length - at, start * DIGEST_BYTES + at);
      } catch (err) {
        throw this.failed(err);
      }
      if (n === 0) throw this.failed(new Error(`it ended at hash ${start + at / DIGEST_BYTES} of ${this.count}`));
      at += n;
    }
    return out;
  }

  /** Lets go of the memory or the file. */
  async close(): Promise<void> {
    this.memory = undefined;
    const file = this.file;
    this.file = undefined;
    await file?.close();
  }

  private async openFile(): Promise<fsp.FileHandle> {
    let dir: string | undefined;
    try {
      dir = await fsp.mkdtemp(path.join(this.dir, 'chunkvault-hashes-'));
      const file = path.join(dir, 'hashes');
      const handle = await fsp.open(file, 'wx+', 0o600);
      await fsp.unlink(file).catch(async (err) => {
        await handle.close();
        throw err;
      });
      return handle;
    } finally {
      if (dir) await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  /** A failure of the file, as the local I/O error it is, naming where it is. */
  private failed(err: unknown): VolumeIOError {
    return new VolumeIOError(`cannot keep the backup's hashes in a temporary file in ${this.dir} (set TMPDIR for another place): ` +
      (err as Error).message, { cause: err });
  }

  private async write(data: Uint8Array, position: number): Promise<void> {
    for (let at = 0; at < data.length; ) {
      const { bytesWritten } = await this.file!.write(data, at, data.length - at, position + at);
      at += bytesWritten;
    }
  }
}
