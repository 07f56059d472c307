/**
 * Lists of SHA-256 digests packed 32 bytes each. A volume has one hash per sha block, tens of
 * millions of them for a large volume or a small block: as 64-character JS strings they cost
 * over 90 bytes each on the heap, packed they cost 32, and they move between threads as one
 * piece of memory. Hex appears only at the edges: the sha256file's text and messages.
 */
import { constants } from 'node:buffer';

/** Bytes of one SHA-256 digest. */
export const DIGEST_BYTES = 32;

/** Hex digit -> value; NOT_HEX for any other byte (its high bits tell a bad digit). */
const NOT_HEX = 0xff;
const HEX_VALUE = new Uint8Array(256).fill(NOT_HEX);
for (let v = 0; v < 16; v++) {
  HEX_VALUE['0123456789abcdef'.charCodeAt(v)] = v;
  HEX_VALUE['0123456789ABCDEF'.charCodeAt(v)] = v;
}
const HEX_DIGIT = Buffer.from('0123456789abcdef', 'latin1');

/**
 * Decodes the 64 hex digits (either case) at `from` in `text` into the digest at `to` in `out`.
 * False, with `out` partly written, when they are not all hex digits.
 */
export function decodeHexDigest(text: Uint8Array, from: number, out: Uint8Array, to: number): boolean {
  let seen = 0;
  for (let j = 0; j < DIGEST_BYTES; j++) {
    const hi = HEX_VALUE[text[from + 2 * j]!]!;
    const lo = HEX_VALUE[text[from + 2 * j + 1]!]!;
    seen |= hi | lo;
    out[to + j] = (hi << 4) | lo;
  }
  return (seen & 0xf0) === 0;
}

/** Writes the digest at `from` in `digests` as 64 lowercase hex digits at `to` in `out`. */
export function encodeHexDigest(digests: Uint8Array, from: number, out: Uint8Array, to: number): void {
  for (let j = 0; j < DIGEST_BYTES; j++) {
    const v = digests[from + j]!;
    out[to + 2 * j] = HEX_DIGIT[v >> 4]!;
    out[to + 2 * j + 1] = HEX_DIGIT[v & 15]!;
  }
}

/** Digests in volume order, read a stretch at a time (from memory, or from where they were put aside). */
export interface Digests {
  readonly length: number;
  /** Digests [start, end), packed. */
  read(start: number, end: number): Uint8Array;
}

/** An immutable list of SHA-256 digests held in one piece of memory. */
export class HashList implements Digests {
  /** The digests back to back (a view: it may share its memory with a larger list). */
  readonly bytes: Buffer;

  /** Wraps packed digests (no copy); `bytes.length` must be a multiple of DIGEST_BYTES. */
  constructor(bytes: Uint8Array = new Uint8Array(0)) {
    if (bytes.length % DIGEST_BYTES) throw new RangeError(`${bytes.length} bytes are not a whole number of SHA-256 digests`);
    this.bytes = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Packs hex digests (either case); an entry that is not one is named by its index. */
  static fromHex(hexes: readonly string[], name = 'sha256s'): HashList {
    const out = Buffer.allocUnsafe(hexes.length * DIGEST_BYTES);
    const text = Buffer.allocUnsafe(2 * DIGEST_BYTES);
    hexes.forEach((h, i) => {
      // As UTF-8, 64 bytes are written from 64 characters only if all are ASCII.
      const ok = typeof h === 'string' && h.length === 2 * DIGEST_BYTES && text.write(h, 'utf8') === h.length;
      if (!ok || !decodeHexDigest(text, 0, out, i * DIGEST_BYTES)) throw new TypeError(`${name}[${i}] is not a SHA-256 hex digest`);
    });
    return new HashList(out);
  }

  get length(): number {
    return this.bytes.length / DIGEST_BYTES;
  }

  /** The digest at `i`, as 64 lowercase hex digits. */
  hexAt(i: number): string {
    this.check(i);
    return this.bytes.toString('hex', i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
  }

  /** Whether the digest at `i` equals `other`'s at `j` (false when either is past its list's end). */
  equalsAt(i: number, other: HashList, j: number): boolean {
    if (!(i >= 0 && i < this.length && j >= 0 && j < other.length)) return false;
    const a = i * DIGEST_BYTES;
    const b = j * DIGEST_BYTES;
    return this.bytes.compare(other.bytes, b, b + DIGEST_BYTES, a, a + DIGEST_BYTES) === 0;
  }

  read(start: number, end: number): Uint8Array {
    return this.bytes.subarray(start * DIGEST_BYTES, end * DIGEST_BYTES);
  }

  /** Digests [start, end) as a view of this list's memory (as Uint8Array#subarray, clamped). */
  subarray(start: number, end = this.length): HashList {
    return new HashList(this.bytes.subarray(start * DIGEST_BYTES, end * DIGEST_BYTES));
  }

  /**
   * Digests [start, end) copied into memory of their own: what is sent to a worker thread,
   * which would otherwise get a copy of all the memory a view shares.
   */
  copy(start = 0, end = this.length): Uint8Array {
    return new Uint8Array(this.bytes.subarray(start * DIGEST_BYTES, end * DIGEST_BYTES));
  }

  private check(i: number): void {
    if (!(Number.isInteger(i) && i >= 0 && i < this.length)) throw new RangeError(`hash ${i} is outside a list of ${this.length}`);
  }
}

/** Collects digests in volume order into one list, growing its memory as they come. */
export class HashListBuilder {
  private bytes = Buffer.allocUnsafe(0);
  private used = 0;

  get length(): number {
    return this.used / DIGEST_BYTES;
  }

  /** Appends packed digests. */
  append(digests: Uint8Array): void {
    if (digests.length % DIGEST_BYTES) throw new RangeError(`${digests.length} bytes are not a whole number of SHA-256 digests`);
    const need = this.used + digests.length;
    if (need > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, Math.min(2 * this.bytes.length, constants.MAX_LENGTH), 1024 * DIGEST_BYTES));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    this.bytes.set(digests, this.used);
    this.used = need;
  }

  /** The digests appended so far. */
  list(): HashList {
    return new HashList(this.bytes.subarray(0, this.used));
  }
}
