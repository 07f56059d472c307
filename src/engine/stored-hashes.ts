/**
 * A stored backup's hashes as they are needed: an incremental's parent's as the backup reaches
 * each chunk, a restore target's as each object is restored. They are read from the
 * sha256file a window at a time (the next one read ahead), so that the list is never held
 * whole. A sha256file in another layout than Cinder's is read whole first.
 */
import type { Backend, CallOptions } from '../backends/backend.js';
import { IntegrityError } from '../errors.js';
import { DIGEST_BYTES, type HashList } from '../format/hash-list.js';
import { SHA256FILE_LINE_BYTES, decodeHashLines, type Sha256FileShape } from '../format/metadata.js';
import { sha256ObjectName } from '../format/naming.js';
import { readSha256File, readSha256FileShape, sha256FileRange, type BackupLocation } from './repository.js';

/** Lines read per window: 16 MiB of text, 233 016 hashes. */
const WINDOW_LINES = Math.floor((16 * 1024 * 1024) / SHA256FILE_LINE_BYTES);

export interface StoredHashes {
  readonly blockSize: number;
  /** How many blocks the backup lists. */
  readonly length: number;
  /**
   * The digests of blocks [block, block + count), fewer past the end, packed in memory of
   * their own (sent to a worker thread). Asked for in increasing order of blocks, they are
   * read once; asked for out of order, a window may be read again.
   */
  take(block: number, count: number): Promise<Uint8Array>;
  /**
   * Reads and checks every hash once, keeping none: for a restore that cannot be taken back
   * (in place, to a stream), a damaged list must stop it before anything is written.
   */
  check(): Promise<void>;
}

export async function openStoredHashes(backend: Backend, loc: BackupLocation, opts?: CallOptions): Promise<StoredHashes> {
  const shape = await readSha256FileShape(backend, loc, opts);
  if (!shape) return inMemory(await readSha256File(backend, loc, opts));
  return new WindowedHashes(backend, loc, shape, opts);
}

function inMemory(sha: { blockSize: number; sha256s: HashList }): StoredHashes {
  return {
    blockSize: sha.blockSize,
    length: sha.sha256s.length,
    take: async (block, count) => sha.sha256s.copy(block, block + count),
    check: async () => {}, // decoded whole: checked already
  };
}

class WindowedHashes implements StoredHashes {
  readonly blockSize: number;
  readonly length: number;
  /** Blocks [start, start + digests.length / DIGEST_BYTES) of the list. */
  private window: { start: number; digests: Uint8Array } = { start: 0, digests: new Uint8Array(0) };
  private next: Promise<Uint8Array> | undefined;

  constructor(
    private readonly backend: Backend,
    private readonly loc: BackupLocation,
    private readonly shape: Sha256FileShape,
    private readonly opts?: CallOptions,
  ) {
    this.blockSize = shape.header.blockSize;
    this.length = shape.blocks;
  }

  async take(block: number, count: number): Promise<Uint8Array> {
    const end = Math.min(block + count, this.length);
    const out = new Uint8Array(Math.max(0, end - block) * DIGEST_BYTES);
    for (let b = block; b < end; ) {
      const { start, digests } = this.window;
      const have = start + digests.length / DIGEST_BYTES;
      if (b < start || b >= have) {
        await this.advance(b);
        continue;
      }
      const upTo = Math.min(end, have);
      out.set(digests.subarray((b - start) * DIGEST_BYTES, (upTo - start) * DIGEST_BYTES), (b - block) * DIGEST_BYTES);
      b = upTo;
    }
    return out;
  }

  async check(): Promise<void> {
    for (let start = 0; start < this.length; start += WINDOW_LINES) await this.read(start);
  }

  /** Moves the window to the one holding `block`, and starts reading the one after it. */
  private async advance(block: number): Promise<void> {
    const start = Math.floor(block / WINDOW_LINES) * WINDOW_LINES;
    const next = this.window.start + this.window.digests.length / DIGEST_BYTES;
    const digests = await (start === next && this.next ? this.next : this.read(start));
    this.window = { start, digests };
    const after = start + WINDOW_LINES;
    this.next = after < this.length ? this.read(after) : undefined;
    this.next?.catch(() => {}); // awaited when reached; a backup that stops first must not see it fail
  }

  private async read(start: number): Promise<Uint8Array> {
    const count = Math.min(WINDOW_LINES, this.length - start);
    const endsList = start + count === this.length;
    const from = this.shape.firstLine + start * SHA256FILE_LINE_BYTES;
    const bytes = count * SHA256FILE_LINE_BYTES - (endsList ? 2 : 0);
    const { bytes: text } = await sha256FileRange(this.backend, this.loc, from, bytes, this.opts);
    const name = sha256ObjectName(this.loc.prefix);
    if (text.length !== bytes) {
      throw new IntegrityError(`${name}: ${bytes} bytes at ${from} are no longer there`, { backupId: this.loc.id, object: name });
    }
    const digests = new Uint8Array(count * DIGEST_BYTES);
    const bad = decodeHashLines(text, count, digests, 0, endsList);
    if (bad >= 0) {
      throw new IntegrityError(`${name}: sha256s[${start + bad}] is not a SHA-256 hex digest on a line of its own`, {
        backupId: this.loc.id,
        object: name,
      });
    }
    return digests;
  }
}
