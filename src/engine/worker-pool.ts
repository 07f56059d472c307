import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import {
  BackendError, CancelledError, CatalogError, ChunkvaultError, ConflictError, IntegrityError, InvalidInputError, NotFoundError,
  TransientBackendError, VolumeIOError, type ErrorContext,
} from '../errors.js';
import type { BackupChunkJob, BackupChunkResult, RestoreObjectJob, RestoreObjectResult } from './chunk-work.js';
import { postWithTransfer } from './transfer.js';

const ERROR_KINDS: Record<string, new (m: string, c: ErrorContext) => ChunkvaultError> = {
  IntegrityError, InvalidInputError, NotFoundError, ConflictError, BackendError, CancelledError, TransientBackendError,
  CatalogError, VolumeIOError,
};

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

interface Slot {
  worker: Worker;
  busy: number;
}

/** The most worker threads a pool may have. */
export const MAX_THREADS = 256;

/** The default number of hashing/compression threads: one per core, at most 8. */
export function defaultThreads(): number {
  return Math.max(1, Math.min(availableParallelism(), 8));
}

/**
 * A fixed set of worker threads running chunk-work jobs. Buffers move between threads
 * without copies; jobs queue when every worker is busy (the caller bounds how many are
 * in flight, which bounds memory).
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending & { slot: Slot }>();
  private seq = 0;
  private failed: Error | undefined;

  constructor(readonly size = defaultThreads()) {
    if (!Number.isSafeInteger(size) || size < 1 || size > MAX_THREADS) {
      throw new InvalidInputError(`threads must be a whole number from 1 to ${MAX_THREADS}, got ${size}`);
    }
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL('./worker.js', import.meta.url));
      const slot: Slot = { worker, busy: 0 };
      worker.on('message', (msg: { seq: number; result?: unknown; error?: { name: string; message: string; context: ErrorContext } }) => {
        const p = this.pending.get(msg.seq);
        if (!p) return;
        this.pending.delete(msg.seq);
        // An idle pool must not keep the process alive; a busy one must.
        if (--slot.busy === 0) worker.unref();
        if (msg.error) {
          const Kind = ERROR_KINDS[msg.error.name];
          p.reject(Kind ? new Kind(msg.error.message, msg.error.context) : new Error(msg.error.message));
        } else {
          p.resolve(msg.result);
        }
      });
      worker.on('error', (err) => this.fail(err));
      worker.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`worker thread exited with code ${code}`));
      });
      worker.unref();
      this.slots.push(slot);
    }
  }

  /** A thread died: every job given to the pool since fails. */
  get broken(): boolean {
    return this.failed !== undefined;
  }

  private fail(err: Error): void {
    this.failed ??= err;
    for (const [seq, p] of this.pending) {
      this.pending.delete(seq);
      p.reject(err);
    }
  }

  run(job: BackupChunkJob): Promise<BackupChunkResult>;
  run(job: RestoreObjectJob): Promise<RestoreObjectResult>;
  run(job: BackupChunkJob | RestoreObjectJob): Promise<unknown> {
    if (this.failed) return Promise.reject(this.failed);
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, slot });
      if (slot.busy++ === 0) slot.worker.ref();
      // The hashes sent with a job are copies made for it: they move to the thread.
      const hashes = job.kind === 'backup' ? (job.parentHashes ? [job.parentHashes] : []) : job.runs.map((r) => r.hashes);
      postWithTransfer(slot.worker, { seq, job }, [job.data, ...hashes]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/**
 * The pool, or a new one in its place when one of its threads died (every job given to it
 * would fail): for owners that keep a pool for many jobs.
 */
export async function renewedIfBroken(pool: WorkerPool): Promise<WorkerPool> {
  if (!pool.broken) return pool;
  await pool.close();
  return new WorkerPool(pool.size);
}

/**
 * Runs `fn` on the caller's pool, or on a private one closed afterwards. A private pool is
 * started first, so that its threads boot while `fn` reads the catalog and the repository.
 */
export async function withPool<T>(o: { pool?: WorkerPool; threads?: number }, fn: (pool: WorkerPool) => Promise<T>): Promise<T> {
  if (o.pool) return fn(o.pool);
  const pool = new WorkerPool(o.threads);
  try {
    return await fn(pool);
  } finally {
    await pool.close();
  }
}
