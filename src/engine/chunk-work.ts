/**
 * The CPU-bound steps of the data path, as pure functions over one chunk or one object.
 * They run inside worker threads (see worker.ts) and, in tests, in-process.
 */
import { createHash } from 'node:crypto';
import { algorithmForLabel, type Algorithm } from '../codecs/codec.js';
import { loadCodec } from '../codecs/codecs.js';
import { IntegrityError } from '../errors.js';

export interface BackupChunkJob {
  kind: 'backup';
  /** The chunk as read from the volume at `offset`. */
  data: Uint8Array;
  offset: number;
  blockSize: number;
  /** Full backup: null. Incremental: the parent's hash of each block of this chunk (undefined past its end). */
  parentHashes: (string | undefined)[] | null;
  /** Label to record when compression helps ("none" disables it). */
  compression: string;
}

export interface StoredExtent {
  offset: number;
  length: number;
  md5: string;
  compression: string;
  data: Uint8Array;
}

export interface BackupChunkResult {
  /** The job's chunk buffer, handed back for reuse (extents stored raw are views of it). */
  chunk: Uint8Array;
  hashes: string[];
  extents: StoredExtent[];
  zeroBlocks: number;
}

export interface RestoreRun {
  /** First volume block index of the run, and how many blocks of this object are kept from it. */
  block: number;
  count: number;
  /** Expected SHA-256 of each block (from the target backup's sha256file). */
  hashes: string[];
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
  /** verify only: the decompressed bytes are not sent back. */
  returnData: boolean;
}

export interface RestoreObjectResult {
  data: Uint8Array | null;
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

const zeroDigests = new Map<string, string>();
function digestOfZeros(algorithm: 'sha256' | 'md5', length: number): string {
  const key = `${algorithm}:${length}`;
  let d = zeroDigests.get(key);
  if (d === undefined) {
    d = createHash(algorithm).update(zeroBuffer(length)).digest('hex');
    zeroDigests.set(key, d);
  }
  return d;
}

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');
const md5 = (data: Uint8Array): string => createHash('md5').update(data).digest('hex');

/** Cinder's `_prepare_output_data`: compress, but store raw and label `none` unless it shrinks. */
async function prepareOutput(data: Uint8Array, label: string): Promise<{ compression: string; data: Uint8Array }> {
  const algorithm: Algorithm | null = algorithmForLabel(label);
  if (algorithm === null) return { compression: 'none', data };
  const compressed = (await loadCodec(algorithm)).compress(data);
  return compressed.length >= data.length ? { compression: 'none', data } : { compression: label, data: compressed };
}

const zeroOutputs = new Map<string, { compression: string; data?: Uint8Array }>();
/** Compressing zeros gives the same bytes every time: do it once per (label, length). */
async function prepareZeroOutput(data: Uint8Array, label: string): Promise<{ compression: string; data: Uint8Array }> {
  const key = `${label}:${data.length}`;
  let out = zeroOutputs.get(key);
  if (out === undefined) {
    const prepared = await prepareOutput(new Uint8Array(data.length), label);
    out = prepared.compression === 'none' ? { compression: 'none' } : prepared;
    zeroOutputs.set(key, out);
  }
  return out.data ? { compression: out.compression, data: out.data.slice() } : { compression: 'none', data };
}

async function storeExtent(data: Uint8Array, offset: number, allZero: boolean, label: string): Promise<StoredExtent> {
  if (allZero) {
    const out = await prepareZeroOutput(data, label);
    return { offset, length: data.length, md5: digestOfZeros('md5', data.length), ...out };
  }
  const out = await prepareOutput(data, label);
  return { offset, length: data.length, md5: md5(data), ...out };
}

/**
 * Hashes every sha block of a chunk and prepares what the backup stores for it: the whole
 * chunk (full backup), or one extent per maximal run of blocks whose hash differs from the
 * parent's (incremental; runs never span two chunks, as in Cinder).
 */
export async function processBackupChunk(job: BackupChunkJob): Promise<BackupChunkResult> {
  const { data, blockSize } = job;
  const hashes: string[] = [];
  const zero: boolean[] = [];
  for (let off = 0; off < data.length; off += blockSize) {
    const block = data.subarray(off, Math.min(off + blockSize, data.length));
    const z = isAllZero(block);
    zero.push(z);
    hashes.push(z ? digestOfZeros('sha256', block.length) : sha256(block));
  }
  const zeroBlocks = zero.filter(Boolean).length;
  const extents: StoredExtent[] = [];
  if (job.parentHashes === null) {
    extents.push(await storeExtent(data, job.offset, zeroBlocks === zero.length, job.compression));
  } else {
    let start = -1;
    for (let i = 0; i <= hashes.length; i++) {
      const changed = i < hashes.length && hashes[i] !== job.parentHashes[i];
      if (changed && start < 0) start = i;
      if (!changed && start >= 0) {
        const from = start * blockSize;
        const to = Math.min(i * blockSize, data.length);
        const allZero = zero.slice(start, i).every(Boolean);
        extents.push(await storeExtent(data.subarray(from, to), job.offset + from, allZero, job.compression));
        start = -1;
      }
    }
  }
  return { chunk: job.data, hashes, extents, zeroBlocks };
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
  let data: Uint8Array;
  if (algorithm === null) {
    data = job.data;
  } else {
    try {
      data = (await loadCodec(algorithm)).decompress(job.data, job.length);
    } catch (err) {
      throw new IntegrityError(
        `object ${job.name} of backup ${job.backupId} (offset ${job.offset}): cannot decompress ${job.compression} data: ${(err as Error).message}`,
        { ...where, offset: job.offset },
      );
    }
  }
  if (data.length !== job.length) {
    throw new IntegrityError(
      `object ${job.name} of backup ${job.backupId} (offset ${job.offset}): length ${data.length}, metadata says ${job.length}`,
      { ...where, offset: job.offset },
    );
  }
  const digest = isAllZero(data) ? digestOfZeros('md5', data.length) : md5(data);
  if (digest !== job.md5) {
    throw new IntegrityError(
      `object ${job.name} of backup ${job.backupId} (offset ${job.offset}): MD5 ${digest} does not match metadata ${job.md5}`,
      { ...where, offset: job.offset },
    );
  }
  const zero = new Uint8Array(job.runs.reduce((n, r) => n + r.count, 0));
  let k = 0;
  for (const run of job.runs) {
    for (let i = 0; i < run.count; i++, k++) {
      const volOff = (run.block + i) * job.blockSize;
      const end = Math.min(volOff + job.blockSize, job.volumeBytes);
      const block = data.subarray(volOff - job.offset, end - job.offset);
      if (block.length !== end - volOff) {
        throw new IntegrityError(
          `object ${job.name} of backup ${job.backupId} does not cover volume offset ${volOff}`,
          { ...where, offset: volOff },
        );
      }
      const z = isAllZero(block);
      zero[k] = z ? 1 : 0;
      const h = z ? digestOfZeros('sha256', block.length) : sha256(block);
      if (h !== run.hashes[i]) {
        throw new IntegrityError(
          `block at volume offset ${volOff} (object ${job.name} of backup ${job.backupId}): SHA-256 ${h} does not match the sha256file (${run.hashes[i]})`,
          { ...where, offset: volOff },
        );
      }
    }
  }
  return { data: job.returnData ? data : null, zero };
}
