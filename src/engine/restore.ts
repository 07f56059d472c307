/**
 * Restore replays a chain (full backup, then its incrementals) as one extent map: every
 * block of the target comes from the newest object covering it, each needed object is
 * read once, checked (length, MD5, SHA-256 of every block) and its blocks written once.
 */
import type { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { countingRetries, type Backend } from '../backends/backend.js';
import type { BackupRecord, Catalog } from '../catalog/catalog.js';
import { ConflictError, IntegrityError, InvalidInputError, NotFoundError } from '../errors.js';
import type { BackupMetadata, ObjectEntry } from '../format/metadata.js';
import { ProgressReporter, type ProgressOptions } from './progress.js';
import { checkListing, locate, readBlockCount, readMetadata, type BackupLocation, type BlockCount } from './repository.js';
import { openStoredHashes, type StoredHashes } from './stored-hashes.js';
import { processAlive, THIS_PROCESS } from './processes.js';
import { openOutput, streamOutput } from './restore-output.js';
import { withPool, type WorkerPool } from './worker-pool.js';
import { sharedBufferPool } from '../io/buffer-pool.js';

const IN_FLIGHT_BYTES = 320 * 1024 * 1024;
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

/** One backup of the chain: of its sha256file only the count is kept (the target's hashes are the plan's). */
export interface Layer extends BlockCount {
  loc: BackupLocation;
  meta: BackupMetadata;
  /** Its exact volume length. */
  bytes: number;
}

/** Where the backup's objects end: the volume's length for a full backup (Cinder stores every chunk). */
export function objectsEnd(meta: BackupMetadata): number {
  return meta.objects.reduce((m, o) => Math.max(m, o.offset + o.length), 0);
}

/**
 * The exact volume length of each layer, from the repository alone: a full backup's objects
 * cover the volume; an incremental's sha256file counts its blocks and its last block is
 * either stored or, unchanged, as long as the parent's block at that index (a layer of
 * `bytes` has ceil(bytes / block size) blocks: its length lies within its last one).
 */
export function layerLength(meta: BackupMetadata, sha: BlockCount, parent: { bytes: number } | undefined, id: string): number {
  const bs = sha.blockSize;
  const n = sha.blocks;
  const end = objectsEnd(meta);
  const fail = (what: string): never => {
    throw new IntegrityError(`backup ${id}: ${what}`, { backupId: id });
  };
  if (n === 0) fail('its sha256file lists no blocks');
  if (end > n * bs) fail(`objects reach offset ${end}, past the ${n} blocks of its sha256file`);
  if (!parent || end > (n - 1) * bs) {
    if (end <= (n - 1) * bs) fail(`objects end at ${end} but its sha256file lists ${n} blocks of ${bs} bytes`);
    return end;
  }
  const parentBlocks = Math.ceil(parent.bytes / bs);
  if (n - 1 < parentBlocks - 1) return n * bs;
  if (n - 1 === parentBlocks - 1) return parent.bytes;
  return fail(`block ${n - 1} lies past its parent's volume but no object stores it`);
}

/** Blocks [block, block + count) of the volume. */
export interface BlockRun {
  block: number;
  count: number;
}

export interface RestorePlan {
  chain: BackupRecord[];
  layers: Layer[];
  bytes: number;
  blockSize: number;
  /** The target's digest of every block: each block restored is checked against it. */
  hashes: StoredHashes;
  /** The objects to read, in volume order, each with the blocks it provides. */
  reads: { layer: Layer; object: ObjectEntry; runs: BlockRun[] }[];
}

export async function planRestore(backend: Backend, catalog: Catalog, id: string, signal?: AbortSignal): Promise<RestorePlan> {
  const chain = await resolveChain(catalog, id);
  const layers: Layer[] = [];
  let hashes: StoredHashes | undefined;
  for (const rec of chain) {
    const loc = locate(rec);
    if (rec.repository !== backend.url) {
      throw new InvalidInputError(`backup ${rec.id} lives in ${rec.repository}, not in ${backend.url} (use --repo)`, {
        backupId: rec.id,
      });
    }
    const meta = await readMetadata(backend, loc, { signal });
    // Blocks are checked against the target's list only: of an ancestor's, the count is enough.
    let count: BlockCount;
    if (rec === chain.at(-1)) {
      hashes = await openStoredHashes(backend, loc, { signal });
      count = { blockSize: hashes.blockSize, blocks: hashes.length };
    } else {
      count = await readBlockCount(backend, loc, { signal });
    }
    const parent = layers.at(-1);
    if (parent && count.blockSize !== parent.blockSize) {
      throw new IntegrityError(`backup ${rec.id}: sha block size ${count.blockSize} differs from its parent's ${parent.blockSize}`, {
        backupId: rec.id,
      });
    }
    await checkListing(backend, loc, meta, { signal });
    layers.push({ loc, meta, ...count, bytes: layerLength(meta, count, parent, rec.id) });
  }
  const target = layers.at(-1)!;
  const bs = target.blockSize;
  const nBlocks = Math.ceil(target.bytes / bs);
  if (nBlocks !== target.blocks) {
    throw new IntegrityError(`backup ${id}: volume of ${target.bytes} bytes needs ${nBlocks} hashes, sha256file has ${target.blocks}`, {
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
  const runsOf = new Map<number, BlockRun[]>();
  for (let b = 0; b < nBlocks; ) {
    const k = owner[b]!;
    if (k < 0) throw new IntegrityError(`backup ${id}: no object of its chain covers volume offset ${b * bs}`, { backupId: id, offset: b * bs });
    let e = b + 1;
    while (e < nBlocks && owner[e] === k) e++;
    const runs = runsOf.get(k) ?? [];
    runs.push({ block: b, count: e - b });
    runsOf.set(k, runs);
    b = e;
  }
  const reads = [...runsOf.entries()]
    .sort((a, b) => a[1][0]!.block - b[1][0]!.block)
    .map(([k, runs]) => ({ ...all[k]!, runs }));
  return { chain, layers, bytes: target.bytes, blockSize: bs, hashes: hashes!, reads };
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
  /**
   * Called once every byte is written, before the output is finished (a new file linked into
   * place): a cancel the caller has not noticed yet (it aborts `signal` from here) still stops it.
   */
  beforeCommit?: () => Promise<void>;
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

/** Whether the restore writes the volume somewhere (else it only verifies). */
const writesSomewhere = (o: RestoreOptions) => o.target !== undefined || o.stream !== undefined;

/** Restores (or, without a target, verifies) a backup and its chain. */
export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  const counter = countingRetries(o.backend);
  return withPool(o, (pool) => restoreWith({ ...o, backend: counter.backend }, pool, counter.retries));
}

async function restoreWith(o: RestoreOptions, pool: WorkerPool, retries: () => number): Promise<RestoreResult> {
  if (!writesSomewhere(o)) {
    return replay(o, pool, await planRestore(o.backend, o.catalog, o.backupId, o.signal), retries);
  }
  // While it is written somewhere the backup is `restoring`, and a delete is refused (unless
  // this process dies: then its record names a writer that is gone). Restores run side by side;
  // a backup in any other status is refused by the plan.
  const holding = await joinRestorers(o.catalog, o.backupId);
  try {
    return await replay(o, pool, await planRestore(o.backend, o.catalog, o.backupId, o.signal), retries);
  } finally {
    if (holding && (!o.release || (await o.release()))) await leaveRestorers(o.catalog, o.backupId).catch(() => {});
  }
}

/**
 * Adds this process to the backup's restorers (`restoring`, every restorer named in `worker`),
 * so that a delete waits for all of them. False when the backup is in no status to restore
 * (the plan says why).
 */
async function joinRestorers(catalog: Catalog, id: string): Promise<boolean> {
  for (;;) {
    const rec = await catalog.get(id);
    if (rec?.status === 'available') {
      if (await catalog.update(id, { status: 'restoring', worker: THIS_PROCESS }, ['available'])) return true;
    } else if (rec?.status === 'restoring') {
      const others = (rec.worker ?? '').split(' ').filter((w) => w && processAlive(w));
      if (await catalog.update(id, { worker: [...others, THIS_PROCESS].join(' ') }, ['restoring'], rec.worker)) return true;
    } else {
      return false;
    }
  }
}

/**
 * Takes a process (this one, or one that died) off the backup's restorers; the last one makes
 * it `available` again.
 */
export async function leaveRestorers(catalog: Catalog, id: string, who = THIS_PROCESS): Promise<void> {
  for (;;) {
    const rec = await catalog.get(id);
    const restorers = (rec?.worker ?? '').split(' ');
    if (rec?.status !== 'restoring' || !restorers.includes(who)) return;
    const others = restorers.filter((w) => w && w !== who && processAlive(w));
    const patch = others.length ? { worker: others.join(' ') } : { status: 'available' as const, worker: null };
    if (await catalog.update(id, patch, ['restoring'], rec.worker)) return;
  }
}

/** Reads, checks and (unless verifying) writes every object of the plan. */
async function replay(o: RestoreOptions, pool: WorkerPool, plan: RestorePlan, retries: () => number): Promise<RestoreResult> {
  const verifyOnly = !writesSomewhere(o);
  // Written in place or to a stream, what is written stays: a damaged list of hashes must stop
  // the restore first (a new file is never put in place unless whole).
  if (o.toExisting || o.stream) await plan.hashes.check();
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
    const handle = async (read: RestorePlan['reads'][number], hashes: Uint8Array[]) => {
      const into = await buffers.acquire();
      try {
        await restoreObject(read, hashes, into);
      } finally {
        buffers.release(into);
      }
    };
    const restoreObject = async ({ layer, object, runs }: RestorePlan['reads'][number], hashes: Uint8Array[], into: Buffer) => {
      const stored = await o.backend.get(layer.loc.container, object.name, { signal: o.signal }).catch((err: unknown) => {
        // Listed a moment ago, gone now (lost, or quarantined by the store): the backup is damaged.
        if (!(err instanceof NotFoundError)) throw err;
        throw new IntegrityError(`backup ${layer.loc.id}: object ${object.name} (offset ${object.offset}) listed in its metadata is missing from container ${layer.loc.container}`, {
          backupId: layer.loc.id, object: object.name, offset: object.offset,
        });
      });
      const r = await pool.run({
        kind: 'restore', backupId: layer.loc.id, name: object.name, data: stored, compression: object.compression,
        offset: object.offset, length: object.length, md5: object.md5, blockSize: bs, volumeBytes: plan.bytes,
        runs: runs.map((run, i) => ({ ...run, hashes: hashes[i]! })),
        into, fillZeros: out !== undefined && !out.sparse,
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
      // Taken in the plan's order (volume order), as the target's list is read.
      const hashes: Uint8Array[] = [];
      for (const run of read.runs) hashes.push(await plan.hashes.take(run.block, run.count));
      const p: Promise<void> = handle(read, hashes).then(
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
    if (out) {
      await o.beforeCommit?.();
      o.signal?.throwIfAborted();
      await out.commit();
    }
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
    retries: retries(),
  };
}
