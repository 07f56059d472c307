/**
 * The CPU-bound steps of the data path, as pure functions over one chunk or one object.
 * They run inside worker threads (see worker.ts).
 */
import { createHash, type Hash } from 'node:crypto';
import { algorithmForLabel, type Algorithm } from '../codecs/codec.js';
import { loadCodec } from '../codecs/codecs.js';
import { IntegrityError } from '../errors.js';
import { DIGEST_BYTES, HashList } from '../format/hash-list.js';

export interface BackupChunkJob {
  kind: 'backup';
  /** The chunk as read from the volume at `offset`. */
  data: Uint8Array;
  offset: number;
  blockSize: number;
  /**
   * Full backup: null. Incremental: the parent's digest of each block of this chunk, packed
   * (fewer than the chunk's blocks where it goes past the parent's end).
   */
  parentHashes: Uint8Array | null;
  /** Label to record when compression helps ("none" disables it). */
  compression: string;
  /**
   * Where compressed extents go, one after another: shared memory of at least the chunk's
   * length, reused by the caller once the extents are stored. Absent: each goes to new memory
   * that moves to the caller (large chunks: a reused buffer would keep resident as much as
   * was ever written to it).
   */
  into?: Uint8Array;
}

export interface StoredExtent {
  offset: number;
  length: number;
  md5: string;
  compression: string;
  /** A view of the job's chunk (stored raw) or of its `into` (compressed). */
  data: Uint8Array;
}

export interface BackupChunkResult {
  /** The SHA-256 digest of each block, packed, in memory of its own (it moves to the caller). */
  hashes: Uint8Array;
  extents: StoredExtent[];
  zeroBlocks: number;
}

export interface RestoreRun {
  /** First volume block index of the run, and how many blocks of this object are kept from it. */
  block: number;
  count: number;
  /** Expected SHA-256 digest of each block (from the target backup's sha256file), packed. */
  hashes: Uint8Array;
}

export interface RestoreObjectJob {
  kind: 'restore';
  backupId: string;
  name: string;
  data: Uint8Array;
  compression: string;
  offset: number;
  length: number;
  md5: string;
  blockSize: number;
  volumeBytes: number;
  runs: RestoreRun[];
  /**
   * Where the decompressed object goes (shared memory of at least `length` bytes, reused by
   * the caller): it stays there, nothing is sent back but the zero flags.
   */
  into: Uint8Array;
  /**
   * The caller writes zero blocks too (into an existing file or device, where holes would
   * leave old bytes): an all-zero object must still fill `into`.
   */
  fillZeros: boolean;
}

export interface RestoreObjectResult {
  /** One flag per kept block, in run order: 1 when the block is all zero. */
  zero: Uint8Array;
}

let zeros = new Uint8Array(0);
function zeroBuffer(length: number): Uint8Array {
  if (zeros.length < length) zeros = new Uint8Array(length);
  return zeros.subarray(0, length);
}

export function isAllZero(data: Uint8Array): boolean {
  return Buffer.compare(data, zeroBuffer(data.length)) === 0;
}

const zeroDigests = new Map<string, Buffer>();
/** The digest of `length` zero bytes (not to be modified: it is shared). */
function digestOfZeros(algorithm: 'sha256' | 'md5', length: number): Buffer {
  const key = `${algorithm}:${length}`;
  let d = zeroDigests.get(key);
  if (d === undefined) {
    d = createHash(algorithm).update(zeroBuffer(length)).digest();
    zeroDigests.set(key, d);
  }
  return d;
}

/**
 * Writes the SHA-256 of `data` at `at` in `out`: through a string of one character per byte
 * ('binary' is Latin-1), which costs less than a Buffer of its own per digest.
 */
function sha256Into(data: Uint8Array, out: Buffer, at: number): void {
  out.write(createHash('sha256').update(data).digest('binary'), at, 'binary');
}
const md5 = (data: Uint8Array): string => createHash('md5').update(data).digest('hex');

/**
 * A codec's output as memory that can move to another thread: as it is when it owns its whole
 * ArrayBuffer, else copied once (a view into a larger or shared allocation, such as zlib's
 * or the wasm codec's, would otherwise be cloned, with everything around it).
 */
function movable(data: Uint8Array): Uint8Array {
  if (data.buffer instanceof ArrayBuffer && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength) return data;
  return data.slice();
}

type Output = { compression: string; data: Uint8Array };

/**
 * Cinder's `_prepare_output_data`: compress, but store raw and label `none` unless it shrinks.
 * With `space` (at least `data.length` bytes), the compressed bytes go to its start; without,
 * to new memory.
 */
async function prepareOutput(data: Uint8Array, label: string, space: Uint8Array | undefined): Promise<Output> {
  const algorithm: Algorithm | null = algorithmForLabel(label);
  if (algorithm === null) return { compression: 'none', data };
  const codec = await loadCodec(algorithm);
  let out: Uint8Array | null;
  if (space) {
    // Only output shorter than the input is kept: give it one byte less room.
    const room = space.subarray(0, data.length - 1);
    const length = codec.compressInto(data, room);
    out = length === null ? null : room.subarray(0, length);
  } else {
    const compressed = codec.compress(data);
    out = compressed.length < data.length ? movable(compressed) : null;
  }
  return out ? { compression: label, data: out } : { compression: 'none', data };
}

function place(bytes: Uint8Array, space: Uint8Array): Uint8Array {
  space.set(bytes);
  return space.subarray(0, bytes.length);
}

const zeroOutputs = new Map<string, Uint8Array | null>();
/**
 * How `length` zero bytes are stored with `algorithm` (null: stored raw, compression does not
 * shrink them). Compressing zeros gives the same bytes every time: done once per length.
 */
async function storedZeros(algorithm: Algorithm, length: number): Promise<Uint8Array | null> {
  const key = `${algorithm}:${length}`;
  let out = zeroOutputs.get(key);
  if (out === undefined) {
    const prepared = await prepareOutput(new Uint8Array(length), algorithm, undefined);
    out = prepared.compression === 'none' ? null : prepared.data;
    zeroOutputs.set(key, out);
  }
  return out;
}

/** prepareOutput for an all-zero extent, from the cache. */
async function prepareZeroOutput(data: Uint8Array, label: string, space: Uint8Array | undefined): Promise<Output> {
  const algorithm = algorithmForLabel(label);
  const out = algorithm === null ? null : await storedZeros(algorithm, data.length);
  if (out === null) return { compression: 'none', data };
  // A copy (Buffer#slice would be a view): the output is transferred to the caller, the cache keeps its own.
  return { compression: label, data: space ? place(out, space) : new Uint8Array(out) };
}

/**
 * Whether an object's stored bytes are exactly those of `length` zeros: then it needs no
 * decompression and no hashing (byte identity is a stronger check than its MD5). Only
 * objects that compressed more than 512:1 are compared, so no large run of zeros is
 * compressed just to find out.
 */
async function isStoredZeros(data: Uint8Array, algorithm: Algorithm | null, length: number): Promise<boolean> {
  if (algorithm === null) return data.length === length && isAllZero(data);
  if (data.length * 512 > length) return false;
  const zeros = await storedZeros(algorithm, length);
  return zeros !== null && Buffer.compare(zeros, data) === 0;
}

interface Run {
  from: number;
  to: number;
  md5: Hash;
  /** Zero bytes not yet fed to md5: an all-zero run never needs them (its MD5 is a constant). */
  zeroTail: number;
  allZero: boolean;
}

function feedZeros(run: Run): void {
  for (let n = run.zeroTail; n > 0; ) {
    const step = Math.min(n, 1 << 20);
    run.md5.update(zeroBuffer(step));
    n -= step;
  }
  run.zeroTail = 0;
}

/**
 * Hashes every sha block of a chunk and prepares what the backup stores for it: the whole
 * chunk (full backup), or one extent per maximal run of blocks whose hash differs from the
 * parent's (incremental; runs never span two chunks, as in Cinder). One pass over the
 * blocks computes SHA-256 and the extents' MD5 while each block is in cache; zero blocks
 * cost a comparison.
 */
export async function processBackupChunk(job: BackupChunkJob): Promise<BackupChunkResult> {
  const { data, blockSize } = job;
  // Its own memory (not the pool's), so that it moves to the caller instead of being copied.
  const packed = Buffer.allocUnsafeSlow(Math.ceil(data.length / blockSize) * DIGEST_BYTES);
  const hashes = new HashList(packed);
  const parent = job.parentHashes && new HashList(job.parentHashes);
  const runs: Run[] = [];
  let run: Run | undefined;
  let zeroBlocks = 0;
  for (let i = 0, off = 0; off < data.length; i++, off += blockSize) {
    const end = Math.min(off + blockSize, data.length);
    const block = data.subarray(off, end);
    const zero = isAllZero(block);
    if (zero) {
      packed.set(digestOfZeros('sha256', block.length), i * DIGEST_BYTES);
      zeroBlocks++;
    } else {
      sha256Into(block, packed, i * DIGEST_BYTES);
    }
    if (parent && hashes.equalsAt(i, parent, i)) {
      run = undefined;
      continue;
    }
    if (!run) runs.push((run = { from: off, to: off, md5: createHash('md5'), zeroTail: 0, allZero: true }));
    run.to = end;
    if (zero) {
      run.zeroTail += block.length;
    } else {
      feedZeros(run);
      run.md5.update(block);
      run.allZero = false;
    }
  }
  const extents: StoredExtent[] = [];
  let used = 0; // bytes of job.into taken by earlier extents (each less than its raw length)
  for (const r of runs) {
    const bytes = data.subarray(r.from, r.to);
    let digest: string;
    if (r.allZero) {
      digest = digestOfZeros('md5', bytes.length).toString('hex');
    } else {
      feedZeros(r);
      digest = r.md5.digest('hex');
    }
    const space = job.into?.subarray(used);
    const out = r.allZero ? await prepareZeroOutput(bytes, job.compression, space) : await prepareOutput(bytes, job.compression, space);
    if (out.data !== bytes) used += out.data.length;
    extents.push({ offset: job.offset + r.from, length: bytes.length, md5: digest, ...out });
  }
  return { hashes: packed, extents, zeroBlocks };
}

/**
 * Decompresses one object and checks it against the metadata (length, MD5) and every kept
 * block against the target backup's SHA-256 list.
 */
export async function processRestoreObject(job: RestoreObjectJob): Promise<RestoreObjectResult> {
  const where = { backupId: job.backupId, object: job.name };
  const algorithm = (() => {
    try {
      return algorithmForLabel(job.compression);
    } catch {
      throw new IntegrityError(
        `object ${job.name} of backup ${job.backupId}: unsupported compression algorithm: ${job.compression}`,
        where,
      );
    }
  })();
  // An all-zero object (free space) is recognised by its stored bytes: nothing to expand or hash.
  const zeros = await isStoredZeros(job.data, algorithm, job.length);
  if (zeros && job.fillZeros) job.into.fill(0, 0, job.length);
  const data = zeros ? null : await placeObject(job, algorithm);
  const digest = !data || isAllZero(data) ? digestOfZeros('md5', job.length).toString('hex') : md5(data);
  if (digest !== job.md5) throw objectError(job, `MD5 ${digest} does not match metadata ${job.md5}`);
  const zero = new Uint8Array(job.runs.reduce((n, r) => n + r.count, 0));
  const blockDigest = Buffer.alloc(DIGEST_BYTES);
  const actual = new HashList(blockDigest);
  let k = 0;
  for (const run of job.runs) {
    const expected = new HashList(run.hashes);
    for (let i = 0; i < run.count; i++, k++) {
      const volOff = (run.block + i) * job.blockSize;
      const end = Math.min(volOff + job.blockSize, job.volumeBytes);
      if (volOff < job.offset || end - job.offset > job.length) {
        throw new IntegrityError(
          `object ${job.name} of backup ${job.backupId} does not cover volume offset ${volOff}`,
          { ...where, offset: volOff },
        );
      }
      const block = data?.subarray(volOff - job.offset, end - job.offset);
      const z = !block || isAllZero(block);
      zero[k] = z ? 1 : 0;
      if (block && !z) sha256Into(block, blockDigest, 0);
      else blockDigest.set(digestOfZeros('sha256', end - volOff));
      if (!actual.equalsAt(0, expected, i)) {
        const listed = i < expected.length ? expected.hexAt(i) : 'none';
        throw new IntegrityError(
          `block at volume offset ${volOff} (object ${job.name} of backup ${job.backupId}): SHA-256 ${actual.hexAt(0)} does not match the sha256file (${listed})`,
          { ...where, offset: volOff },
        );
      }
    }
  }
  return { zero };
}

/** Puts the object's uncompressed bytes at the start of `job.into`; returns them (length checked). */
async function placeObject(job: RestoreObjectJob, algorithm: Algorithm | null): Promise<Uint8Array> {
  let length = job.data.length;
  if (algorithm !== null) {
    const codec = await loadCodec(algorithm);
    try {
      length = codec.decompress(job.data, job.into);
    } catch (err) {
      throw objectError(job, `cannot decompress ${job.compression} data: ${(err as Error).message}`);
    }
  } else if (length === job.length) {
    job.into.set(job.data);
  }
  if (length !== job.length) throw objectError(job, `length ${length}, metadata says ${job.length}`);
  return job.into.subarray(0, length);
}

/** An IntegrityError naming the object, its backup and its volume offset. */
function objectError(job: RestoreObjectJob, message: string): IntegrityError {
  return new IntegrityError(`object ${job.name} of backup ${job.backupId} (offset ${job.offset}): ${message}`, {
    backupId: job.backupId, object: job.name, offset: job.offset,
  });
}
