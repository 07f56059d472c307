import { InvalidInputError } from '../errors.js';

/**
 * A compression algorithm of the Cinder format. Calls are synchronous and CPU-bound:
 * they run inside the engine's worker threads.
 */
export interface Codec {
  readonly algorithm: Algorithm;
  /** The exact bytes Cinder's Python writer produces for `data`, in new memory. */
  compress(data: Uint8Array): Uint8Array;
  /** The same bytes, written into `into`; returns their length, or null when they do not fit. */
  compressInto(data: Uint8Array, into: Uint8Array): number | null;
  /**
   * Decompresses one object into `into` (at least the object's length) and returns the
   * decompressed length; a stream that does not fit throws.
   */
  decompress(data: Uint8Array, into: Uint8Array): number;
}

export type Algorithm = 'zlib' | 'bz2' | 'zstd';

/**
 * Cinder's `_get_compressor`: any case of none/off/no means no compression; gzip is an
 * alias of zlib (and writes zlib streams), bzip2 of bz2.
 */
export function algorithmForLabel(label: string | null): Algorithm | null {
  const l = (label ?? 'none').toLowerCase();
  if (l === 'none' || l === 'off' || l === 'no') return null;
  if (l === 'zlib' || l === 'gzip') return 'zlib';
  if (l === 'bz2' || l === 'bzip2') return 'bz2';
  if (l === 'zstd') return 'zstd';
  throw new InvalidInputError(`unsupported compression algorithm: ${label}`);
}

/** The label a writer records: the configured name lower-cased, as Cinder records it. */
export function writerLabel(option: string): string {
  const algorithm = algorithmForLabel(option);
  return algorithm === null ? 'none' : option.toLowerCase();
}

export const COMPRESSION_CHOICES = ['none', 'off', 'no', 'zlib', 'gzip', 'bz2', 'bzip2', 'zstd'];
