/**
 * A backup is a pipeline: source -> hash/diff + compress (worker threads) -> store (in
 * parallel, names assigned in volume order) -> commit (`_sha256file`, then `_metadata`).
 * Nothing is visible as a backup until the metadata object exists.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { countingRetries, type Backend } from '../backends/backend.js';
import { requireBackup, type BackupRecord, type BackupStatus, type Catalog } from '../catalog/catalog.js';
import { algorithmForLabel, writerLabel } from '../codecs/codec.js';
import { CancelledError, ConflictError, IntegrityError, InvalidInputError, NotFoundError, VolumeIOError } from '../errors.js';
import { DIGEST_BYTES } from '../format/hash-list.js';
import {
  encodeMetadata, sha256FileCapacity, sha256FileLength, sha256FilePieces, type ObjectEntry, type Sha256File,
} from '../format/metadata.js';
import {
  FORMAT_VERSION, checkIdentifier, dataObjectName, defaultContainer, metadataObjectName, objectPrefix, pythonDatetimeString,
  sha256ObjectName,
} from '../format/naming.js';
import { CINDER_DRIVER_CLASS } from '../format/record.js';
import { ALIGN } from '../io/aligned.js';
import { HashSpill } from '../io/hash-spill.js';
import { sharedBufferPool } from '../io/buffer-pool.js';
import type { BackupChunkResult } from './chunk-work.js';
import { ProgressReporter, type ProgressOptions } from './progress.js';
import { openStoredHashes, type StoredHashes } from './stored-hashes.js';
import {
  locate, readMetadata, removeBackupObjects, requireSha256File, type BackupLocation,
} from './repository.js';
import type { VolumeSource } from './source.js';
import { THIS_PROCESS } from './processes.js';
import { withPool, type WorkerPool } from './worker-pool.js';

export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;
export const DEFAULT_SHA_BLOCK_SIZE = 32 * 1024;
export const DEFAULT_COMPRESSION = 'zstd';
const GiB = 1024 ** 3;
const UPLOAD_BYTES = 128 * 1024 * 1024;
const WORKER_QUEUE_BYTES = 64 * 1024 * 1024;
const OUTPUT_POOL_BYTES = 128 * 1024 * 1024;
const READ_AHEAD = 4;
/** How long object writes in flight may finish after a backup failed, before they are aborted. */
const UPLOAD_DRAIN_MS = 10_000;
/** The largest chunk: one read(2) and one object must stay under 2 GiB. */
export const MAX_CHUNK_SIZE = 2 ** 31 - 1;
const READ_AHEAD_BYTES = 32 * 1024 * 1024;

export interface BackupOptions extends ProgressOptions {
  backend: Backend;
  catalog: Catalog;
  source: VolumeSource;
  volumeId: string;
  backupId?: string;
  /** Base the backup on the latest available backup of the volume in this repository. */
  incremental?: boolean;
  /** Base the backup on this backup (implies incremental). */
  parentId?: string;
  compression?: string;
  chunkSize?: number;
  shaBlockSize?: number;
  container?: string;
  name?: string | null;
  description?: string | null;
  availabilityZone?: string;
  /** Creation time (defaults to now, whole seconds): names the prefix and `created_at`. */
  timestamp?: Date;
  signal?: AbortSignal;
  /** Worker threads to use (a shared pool, or a count for a private one). */
  pool?: WorkerPool;
  threads?: number;
  /**
   * The record `backupId` already exists in status `creating` (a queued service request):
   * fill it in instead of creating one. A record no longer `creating` means cancelled.
   */
  recordExists?: boolean;
  /** How often the writer looks for a `deleting` status set by another process. */
  cancelPollMs?: number;
  /**
   * Called at the last look before the commit point: a cancel the caller has not noticed yet
   * (it aborts `signal` from here) stops the backup there instead of after it was committed.
   */
  beforeCommit?: () => Promise<void>;
}

export interface BackupResult {
  id: string;
  volumeId: string;
  parentId: string | null;
  kind: 'full' | 'incremental';
  repository: string;
  container: string;
  prefix: string;
  bytes: number;
  objects: number;
  storedBytes: number;
  zeroBlocks: number;
  seconds: number;
  bytesPerSecond: number;
  /** Storage calls retried after transient faults. */
  retries: number;
}

function positiveInt(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new InvalidInputError(`${what} must be a positive integer, got ${v}`);
  return v;
}

/**
 * A chunk size a backup with sha blocks of `shaBlockSize` can use: whole blocks (Cinder hashes
 * each chunk block by block), one object and one read under 2 GiB. `name` is the caller's
 * spelling of it (an option, a request field).
 */
export function checkChunkSize(chunkSize: number, shaBlockSize: number, name = 'chunk size'): void {
  positiveInt(chunkSize, name);
  if (chunkSize > MAX_CHUNK_SIZE) {
    throw new InvalidInputError(`${name} ${chunkSize} is too large: at most ${MAX_CHUNK_SIZE} bytes (2 GiB - 1; Cinder's largest default is 1999994880)`);
  }
  if (chunkSize % shaBlockSize) {
    throw new InvalidInputError(`${name} ${chunkSize} is not a multiple of the sha block size ${shaBlockSize} (Cinder requires it to hash whole blocks)`);
  }
}

/** Complete backups an incremental may build on (one being restored is only being read). */
export const PARENT_STATUSES: BackupStatus[] = ['available', 'restoring'];

/** An explicit parent: it must exist, be available, be of the same volume, and live in the repository written to. */
export async function requireParent(catalog: Catalog, backend: Backend, parentId: string, volumeId: string): Promise<BackupRecord> {
  const parent = await requireBackup(catalog, parentId, 'parent backup');
  if (parent.volume_id !== volumeId) {
    throw new InvalidInputError(`parent backup ${parent.id} is a backup of volume ${parent.volume_id}, not ${volumeId}`, { backupId: parent.id });
  }
  if (!PARENT_STATUSES.includes(parent.status)) {
    throw new ConflictError(`parent backup ${parent.id} is ${parent.status}, not available`, { backupId: parent.id });
  }
  if (parent.repository !== backend.url) {
    throw new InvalidInputError(`parent backup ${parent.id} lives in ${parent.repository}, not in ${backend.url}`);
  }
  return parent;
}

async function resolveParent(o: BackupOptions): Promise<BackupRecord | undefined> {
  if (o.parentId) return requireParent(o.catalog, o.backend, o.parentId, o.volumeId);
  if (!o.incremental) return undefined;
  const candidates = await o.catalog.list({ volumeId: o.volumeId, repository: o.backend.url });
  const parent = candidates.filter((r) => PARENT_STATUSES.includes(r.status)).at(-1);
  if (!parent) {
    throw new NotFoundError(
      `no available backup of volume ${o.volumeId} in ${o.backend.url} to base an incremental backup on; make a full backup first`,
    );
  }
  return parent;
}

/**
 * The parent is still there once this incremental names it in the catalog. A delete checks for
 * dependents after it marks the backup `deleting`; both sides write first and look second, so
 * one of them sees the other.
 */
async function parentKept(catalog: Catalog, parentId: string): Promise<boolean> {
  const now = await catalog.get(parentId);
  return now !== undefined && PARENT_STATUSES.includes(now.status);
}

/**
 * Every backup of the parent's chain still has its commit point (`_metadata`) and its
 * `_sha256file` (a restore of an incremental reads its ancestors' hash lists): an incremental
 * on a damaged chain could never be restored, and must not look complete.
 */
async function requireCommittedChain(o: BackupOptions, parent: BackupRecord): Promise<void> {
  const chain: BackupRecord[] = [];
  for (let b: BackupRecord | undefined = parent; b; b = b.parent_id ? await o.catalog.get(b.parent_id) : undefined) {
    chain.push(b);
    if (chain.length > 10_000) break; // a cycle in a damaged catalog: restore names it
  }
  const queue = [...chain];
  await Promise.all(Array.from({ length: Math.min(8, queue.length) }, async () => {
    for (let b = queue.shift(); b; b = queue.shift()) {
      await readMetadata(o.backend, locate(b), { signal: o.signal });
      // The parent's own sha256file was opened just before (readChain).
      if (b !== parent) await requireSha256File(o.backend, locate(b), { signal: o.signal });
    }
  }));
}

/** What a parent that a delete took away (or is taking away) gives an incremental: a conflict. */
function parentDeleted(parentId: string, backupId: string): ConflictError {
  const err = new ConflictError(`parent backup ${parentId} was being deleted as this incremental started; back up again`, { backupId });
  gaveWayToDelete.add(err);
  return err;
}

/** Conflicts of incrementals that gave way to their parent's delete: they no longer depend on it. */
const gaveWayToDelete = new WeakSet<Error>();

/**
 * The parent's hashes, once its chain is known to be whole. An object missing because a
 * delete of the parent began after it was chosen (a delete removes `_metadata` first) is that
 * delete winning the race, not damage; so is its sha256file going while it is read.
 */
async function readChain(o: BackupOptions, parent: BackupRecord): Promise<StoredHashes> {
  const raced = (err: unknown) => parentRace(o, parent, err);
  const hashes = await openStoredHashes(o.backend, locate(parent), { signal: o.signal }).catch(raced);
  await requireCommittedChain(o, parent).catch(raced);
  return {
    blockSize: hashes.blockSize,
    length: hashes.length,
    take: (block, count) => hashes.take(block, count).catch(raced),
    check: () => hashes.check().catch(raced),
  };
}

/** Rethrows `err`; as the conflict it is when it says the parent is damaged while a delete of it goes on. */
async function parentRace(o: BackupOptions, parent: BackupRecord, err: unknown): Promise<never> {
  if (err instanceof IntegrityError && err.context.backupId === parent.id) {
    const now = await o.catalog.get(parent.id);
    if (!now || now.status === 'deleting' || now.status === 'deleted') throw parentDeleted(parent.id, parent.id);
  }
  throw err;
}

function emptySource(source: VolumeSource): InvalidInputError {
  return new InvalidInputError(`source ${source.name} is empty: there is nothing to back up`);
}

/** Marks promises as handled now; their errors still surface where they are awaited. */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Settles with `p`, or rejects as soon as `signal` aborts (a stalled pipe must not delay a cancel). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    quiet(p); // its failure, if it fails later, is no longer anyone's to handle
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export async function runBackup(o: BackupOptions): Promise<BackupResult> {
  o.signal?.throwIfAborted();
  checkIdentifier(o.volumeId, 'volume id');
  if (o.backupId !== undefined) checkIdentifier(o.backupId, 'backup id');
  // Known to be empty up front (a file): refused before anything is recorded.
  if (o.source.size === 0) throw emptySource(o.source);
  // Every call counts, the parent's sha256file and the container check too.
  const counter = countingRetries(o.backend);
  return withPool(o, (pool) => backupWith({ ...o, backend: counter.backend }, pool, counter.retries));
}

async function backupWith(o: BackupOptions, pool: WorkerPool, retries: () => number): Promise<BackupResult> {
  const compression = writerLabel(o.compression ?? DEFAULT_COMPRESSION);
  const parent = await resolveParent(o);
  const parentSha = parent ? await readChain(o, parent) : undefined;
  const shaBlockSize = positiveInt(o.shaBlockSize ?? parentSha?.blockSize ?? DEFAULT_SHA_BLOCK_SIZE, 'sha block size');
  const chunkSize = o.chunkSize ?? DEFAULT_CHUNK_SIZE;
  checkChunkSize(chunkSize, shaBlockSize);
  if (parentSha && parentSha.blockSize !== shaBlockSize) {
    throw new InvalidInputError(
      `Hash block size has changed since the last backup. New hash block size: ${shaBlockSize}. Old hash block size: ${parentSha.blockSize}. Do a full backup.`,
    );
  }
  algorithmForLabel(compression);

  const id = o.backupId ?? randomUUID();
  // The catalog keeps the start to the millisecond (the latest backup of a volume is the one
  // started last, even within a second); names and the metadata use whole seconds, as Cinder's.
  const started = o.timestamp ?? new Date();
  const timestamp = new Date(Math.floor(started.getTime() / 1000) * 1000);
  const createdAt = pythonDatetimeString(timestamp);
  const sha = { version: FORMAT_VERSION, backupId: id, volumeId: o.volumeId, name: o.name ?? null,
    description: o.description ?? null, createdAt };
  // The sha256file is one object: a sha block far smaller than the volume would make it larger
  // than the store takes. Cinder sets no minimum block size, so this is the bound.
  const maxHashes = sha256FileCapacity({ ...sha, blockSize: shaBlockSize }, o.backend.maxObjectBytes);
  // An incremental keeps its parent's sha block size: a volume grown past what that allows
  // needs a full backup.
  const tooManyHashes = (bytes: number, atLeast = '') => new InvalidInputError(
    `sha block size ${shaBlockSize}${parent ? ` (that of parent backup ${parent.id})` : ''} is too small for a volume of ` +
    `${atLeast}${bytes} bytes: its sha256file would list ${atLeast}${Math.ceil(bytes / shaBlockSize)} SHA-256 hashes, more than the ` +
    `${maxHashes} one backup can list (a ${sha256FileLength({ ...sha, blockSize: shaBlockSize }, maxHashes)}-byte sha256file); ` +
    (parent
      ? 'the volume has grown past what an incremental of it can list: do a full backup, with a larger sha block size'
      : 'use a larger sha block size'));
  if (o.source.size !== undefined && Math.ceil(o.source.size / shaBlockSize) > maxHashes) throw tooManyHashes(o.source.size);
  const container = o.container ?? o.backend.defaultContainer ?? defaultContainer(o.backend.kind, id);
  const prefix = objectPrefix(o.backend.kind, {
    volumeId: o.volumeId,
    backupId: id,
    timestamp,
    availabilityZone: o.availabilityZone,
  });
  const loc: BackupLocation = { id, container, prefix };
  // An unreachable repository fails before anything is recorded.
  await o.backend.ensureContainer(container, { signal: o.signal });
  const record = {
    id,
    volume_id: o.volumeId,
    parent_id: parent?.id ?? null,
    repository: o.backend.url,
    container,
    service_metadata: prefix,
    status: 'creating',
    fail_reason: null,
    size: 0,
    volume_bytes: null,
    object_count: 0,
    stored_bytes: null,
    display_name: o.name ?? null,
    display_description: o.description ?? null,
    availability_zone: o.availabilityZone ?? 'nova',
    host: hostname(),
    service: CINDER_DRIVER_CLASS[o.backend.kind],
    compression,
    chunk_size: chunkSize,
    sha_block_size: shaBlockSize,
    source: o.source.name,
    worker: THIS_PROCESS,
    created_at: started.toISOString(),
    data_timestamp: started.toISOString(),
  } as const;
  if (!o.recordExists) await o.catalog.create(record);
  else if (!(await o.catalog.update(id, record, ['creating']))) {
    throw new CancelledError(`backup ${id} was cancelled before it started`, { backupId: id });
  }

  // One controller stops every step: the caller's signal, a `deleting` status, or a failure.
  const stop = new AbortController();
  const onAbort = () => {
    const why = o.signal?.reason instanceof Error ? o.signal.reason.message : 'cancelled';
    stop.abort(new CancelledError(`backup ${id}: ${why}`, { backupId: id }));
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  // A cancel that came while the backup was being set up (threads, parent, container, record)
  // fires no event now: it was lost, and the backup ran on as if never cancelled.
  if (o.signal?.aborted) onAbort();
  let deletedByUser = false;
  // Another process may end the backup: a delete (`deleting`), or a service that gave this
  // writer up for dead (`error`, its objects removed). Either way this writer stops.
  const takenAway = async (): Promise<CancelledError | undefined> => {
    const rec = await o.catalog.get(id).catch(() => undefined);
    if (!rec || rec.status === 'creating') return undefined;
    if (rec.status === 'deleting' || rec.status === 'deleted') {
      deletedByUser = true;
      return new CancelledError(`backup ${id} was deleted while it was being written`, { backupId: id });
    }
    return new CancelledError(`backup ${id} was marked ${rec.status} by another process while it was being written` +
      (rec.fail_reason ? ` (${rec.fail_reason})` : ''), { backupId: id });
  };
  const poll = setInterval(async () => {
    const why = await takenAway();
    if (why) stop.abort(why);
  }, o.cancelPollMs ?? 1000);
  poll.unref();

  const progress = new ProgressReporter('backup', id, o.source.size, o);
  const written: string[] = [];
  const uploads = new Set<Promise<void>>();
  const signal = stop.signal;
  // Object writes stop separately: after a failure they may finish (see the clean-up).
  const uploadStop = new AbortController();
  // The volume's hashes, in volume order: a large volume's go to a temporary file.
  const hashes = new HashSpill();
  try {
    if (parent && !(await parentKept(o.catalog, parent.id))) throw parentDeleted(parent.id, id);
    const result = await writeObjects();
    await o.backend.flush(container, { signal });
    written.push(sha256ObjectName(prefix));
    await o.backend.putPieces(container, sha256ObjectName(prefix),
      sha256FilePieces({ ...sha, blockSize: shaBlockSize, sha256s: hashes }), { signal });
    await o.backend.flush(container, { signal });
    signal.throwIfAborted();
    // The last look before the commit point: a backup given up elsewhere must not appear complete.
    const gone = await takenAway();
    if (gone) throw gone;
    await o.beforeCommit?.();
    signal.throwIfAborted();
    written.push(metadataObjectName(prefix));
    await o.backend.put(container, metadataObjectName(prefix), encodeMetadata({
      ...sha, parentId: parent?.id ?? null, objects: result.entries, volumeMeta: null,
    }), { signal });
    await o.backend.flush(container, { signal });
    const committed = await o.catalog.update(id, {
      status: 'available',
      size: Math.max(1, Math.ceil(result.bytes / GiB)),
      volume_bytes: result.bytes,
      object_count: result.entries.length,
      stored_bytes: result.storedBytes,
      worker: null,
    }, ['creating']);
    if (!committed) {
      deletedByUser = true;
      throw new CancelledError(`backup ${id} was deleted while it was being written`, { backupId: id });
    }
    progress.end();
    const seconds = progress.elapsedSeconds();
    return {
      id, volumeId: o.volumeId, parentId: parent?.id ?? null, kind: parent ? 'incremental' : 'full',
      repository: o.backend.url, container, prefix, bytes: result.bytes, objects: result.entries.length,
      storedBytes: result.storedBytes, zeroBlocks: result.zeroBlocks, seconds,
      bytesPerSecond: seconds > 0 ? result.bytes / seconds : 0, retries: retries(),
    };
  } catch (err) {
    const reason = signal.aborted && signal.reason instanceof CancelledError ? signal.reason : err;
    stop.abort(reason);
    // Writes already sent may still land after an abort (the store has the data): they get a
    // moment to finish, so that the clean-up sees and removes what they stored.
    const drained = Promise.allSettled([...uploads]);
    await Promise.race([drained, sleep(UPLOAD_DRAIN_MS, undefined, { ref: false })]);
    uploadStop.abort(reason);
    await drained;
    await cleanUp(reason as Error);
    throw reason;
  } finally {
    clearInterval(poll);
    progress.stop();
    o.signal?.removeEventListener('abort', onAbort);
    await hashes.close();
  }

  async function writeObjects() {
    // Commits run in chunk order as soon as each chunk's result is ready, while the reader goes
    // on (a slow source, such as a pipe, must not hold back finished chunks); the reader waits
    // only when `maxInflight` chunks are not yet committed.
    const uncommitted: Promise<void>[] = [];
    let commits: Promise<void> = Promise.resolve();
    let halted = false; // set when the reader fails: no commit may start after that
    // Chunks at the workers: with small chunks up to 4 per thread, so none waits while the
    // oldest is committed; large ones are bounded by bytes (one per thread at least).
    // A volume smaller than a chunk needs buffers only as large as itself (Cinder's 1.86 GiB
    // chunks would otherwise take gigabytes for a small image).
    const size = o.source.size;
    const bufferSize = size !== undefined && size > 0 ? Math.min(chunkSize, Math.ceil(size / ALIGN) * ALIGN) : chunkSize;
    const maxInflight = Math.max(pool.size, Math.min(pool.size * 4, Math.floor(WORKER_QUEUE_BYTES / bufferSize)));
    // In-flight memory is a few chunks: bound parallel writes by bytes as well as by count.
    const maxUploads = Math.max(1, Math.min(4, Math.floor(UPLOAD_BYTES / bufferSize)));
    const entries: ObjectEntry[] = [];
    let storedBytes = 0;
    let zeroBlocks = 0;
    let offset = 0;
    let block = 0;

    // Chunk buffers circulate (reader -> worker -> store -> reader) instead of piling up as
    // garbage: one being read, those at the workers, those whose raw extents are being stored.
    // Reads run ahead of the workers, several at once where the source allows it (a disk serves
    // a few parallel requests faster than one at a time); they start in volume order.
    const readAhead = o.source.parallelReads ? Math.max(1, Math.min(READ_AHEAD, Math.floor(READ_AHEAD_BYTES / bufferSize))) : 1;
    const chunks = sharedBufferPool(bufferSize, maxInflight + maxUploads + readAhead, (n) => o.source.buffer(n));
    let issued: Promise<unknown> = Promise.resolve();
    const startRead = (): Promise<{ buffer: Buffer; data: Buffer }> => {
      const started = issued.then(async () => {
        const buffer = await chunks.acquire();
        return { buffer, reading: o.source.read(buffer) };
      });
      issued = started.catch(() => {});
      return started.then(async ({ buffer, reading }) => ({ buffer, data: await reading }));
    };

    // Workers compress into shared buffers and objects are stored from them. They are reused
    // while they are small; a large one would keep resident as much as was ever written to it,
    // so large chunks get a fresh one each.
    const nOutputs = maxInflight + maxUploads;
    const outputs = nOutputs * bufferSize <= OUTPUT_POOL_BYTES ? sharedBufferPool(bufferSize, nOutputs) : undefined;

    const commit = async (chunk: { result: Promise<BackupChunkResult>; length: number; buffer: Buffer; into: Buffer | undefined }) => {
      const r = await chunk.result;
      if (halted) return;
      const puts: Promise<void>[] = [];
      const usingChunk: Promise<void>[] = [];
      // A source of unknown size (a pipe) is stopped once its hashes no longer fit.
      if (hashes.length + r.hashes.length / DIGEST_BYTES > maxHashes) throw tooManyHashes(offset, 'at least ');
      await hashes.append(r.hashes);
      zeroBlocks += r.zeroBlocks;
      for (const ext of r.extents) {
        const name = dataObjectName(prefix, entries.length + 1);
        entries.push({ name, offset: ext.offset, length: ext.length, md5: ext.md5, compression: ext.compression });
        storedBytes += ext.data.length;
        written.push(name);
        while (uploads.size >= maxUploads) await untilAborted(Promise.race(uploads), signal);
        // A failed write stops the whole backup at once (and is never lost from view).
        const put: Promise<void> = o.backend.put(container, name, ext.data, { signal: uploadStop.signal }).then(
          () => void uploads.delete(put),
          (err: unknown) => {
            uploads.delete(put);
            stop.abort(err);
            throw err;
          },
        );
        quiet(put);
        uploads.add(put);
        puts.push(put);
        if (ext.compression === 'none') usingChunk.push(put); // stored raw: a view of the chunk
      }
      // Each buffer is reused once every object stored from it is written.
      if (usingChunk.length) void Promise.allSettled(usingChunk).then(() => chunks.release(chunk.buffer));
      else chunks.release(chunk.buffer);
      if (outputs && chunk.into) void Promise.allSettled(puts).then(() => outputs.release(chunk.into!));
      progress.add(chunk.length, r.extents.length);
    };

    try {
      await readChunks();
      await commits;
    } catch (err) {
      // Every commit has finished before the caller cleans up, so it sees every object written.
      halted = true;
      await commits.catch(() => {});
      throw err;
    }
    // A cancel does not wait for a write the store is sitting on (the clean-up gives it its moment).
    await untilAborted(Promise.all(uploads), signal);
    if (offset === 0) throw emptySource(o.source);
    // A file that shrank or grew while it was read gives no consistent volume.
    if (size !== undefined && offset !== size) {
      throw new VolumeIOError(`${o.source.name}: changed size while it was backed up (${size} bytes when opened, ${offset} read)`, { offset });
    }
    return { entries, storedBytes, zeroBlocks, bytes: offset };

    async function readChunks() {
      const ahead: Promise<{ buffer: Buffer; data: Buffer }>[] = [];
      for (;;) {
        signal.throwIfAborted();
        while (ahead.length < readAhead) ahead.push(quiet(startRead()));
        const { buffer, data } = await untilAborted(ahead.shift()!, signal);
        if (data.length === 0) break;
        const nBlocks = Math.ceil(data.length / shaBlockSize);
        const parentHashes = parentSha ? await untilAborted(parentSha.take(block, nBlocks), signal) : null;
        const length = data.length;
        const into = outputs && (await untilAborted(outputs.acquire(), signal));
        const chunk = {
          result: quiet(pool.run({ kind: 'backup', data, offset, blockSize: shaBlockSize, parentHashes, compression, into })),
          length,
          buffer,
          into,
        };
        commits = quiet(commits.then(() => commit(chunk)));
        uncommitted.push(commits);
        offset += chunk.length;
        block += nBlocks;
        while (uncommitted.length >= maxInflight) await uncommitted.shift();
        if (chunk.length < chunkSize) break;
      }
    }
  }

  async function cleanUp(reason: Error) {
    // A delete that arrived as the backup stopped for another reason still wins.
    if ((await o.catalog.get(id).catch(() => undefined))?.status === 'deleting') deletedByUser = true;
    const report = await removeBackupObjects(o.backend, loc, written).catch((e: Error) => ({
      deleted: 0,
      failed: [e.message],
    }));
    const left = report.failed.length ? `; removing its objects failed ${report.failed.length} time(s), first: ${report.failed[0]}` : '';
    const patch = deletedByUser
      ? { status: 'deleted' as const, deleted_at: new Date().toISOString(), fail_reason: `cancelled: deleted while running${left}`, worker: null }
      : { status: 'error' as const, fail_reason: `${reason.message}${left}`, worker: null };
    // It never depended on a parent it gave way to: the parent's delete may go on.
    if (gaveWayToDelete.has(reason)) Object.assign(patch, { parent_id: null });
    // A record another process already ended (marked error, or deleted) keeps what it says.
    await o.catalog.update(id, patch, ['creating', 'deleting']).catch(() => {});
  }
}
