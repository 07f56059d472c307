/**
 * A job worker: claims one job at a time from the catalog, keeps its lease alive while it
 * runs (writing progress at the same bounded rate), honours cancel requests, reaps jobs
 * whose workers died, and on stop() finishes or cancels its job within a deadline.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend } from '../backends/backend.js';
import type { Catalog } from '../catalog/catalog.js';
import type { JobOutcome, JobProgress, JobRecord } from '../catalog/jobs.js';
import { THIS_PROCESS } from '../engine/processes.js';
import { leaveRestorers } from '../engine/restore.js';
import { renewedIfBroken, WorkerPool } from '../engine/worker-pool.js';
import { CancelledError, ChunkvaultError } from '../errors.js';
import type { AllowList } from './allow-list.js';
import { within } from './deadline.js';
import { executeJob } from './executor.js';
import type { Logger } from './log.js';
import { reapAbandonedJobs } from './reaper.js';

/** How long a cancelled job gets to stop at shutdown. */
const STOP_GRACE_MS = 10_000;

/** How long a worker keeps trying to record a job's outcome in a catalog that does not answer. */
const OUTCOME_RETRY_MS = 60_000;

export interface WorkerOptions {
  catalog: Catalog;
  backend: Backend;
  allow: AllowList;
  log: Logger;
  leaseMs: number;
  threads?: number;
  name?: string;
}

/** The job a worker runs: `done` settles once it has ended and its outcome was recorded (or given up on). */
interface Current {
  job: JobRecord;
  abort: AbortController;
  done: Promise<void>;
}

export class JobWorker {
  readonly name: string;
  private stopping = false;
  private readonly wake = new AbortController();
  private current: Current | undefined;
  private loop: Promise<void> | undefined;
  private claiming: Promise<Current | undefined> | undefined;
  private pool: WorkerPool;
  private lastReap = 0;

  constructor(private readonly o: WorkerOptions) {
    this.name = o.name ?? THIS_PROCESS;
    this.pool = new WorkerPool(o.threads);
  }

  start(): void {
    this.loop ??= this.run();
  }

  /**
   * Stops claiming (a claim in flight is abandoned unless it is being committed); lets the
   * running job finish for up to `timeoutMs`, then cancels it. An idle worker waits at most
   * `timeoutMs` for a catalog that stopped answering. False when the cancelled job did not
   * stop either (it is left to its lease).
   */
  async stop(timeoutMs: number): Promise<boolean> {
    this.stopping = true;
    this.wake.abort(); // ends an idle wait, and abandons a claim not yet being committed
    // A claim being committed as the stop began may bring a job: it is handled like one already running.
    // (A claim that fails or was abandoned is the loop's to log.)
    await within((this.claiming ?? Promise.resolve()).catch(() => {}), timeoutMs, undefined);
    const cur = this.current;
    if (cur) {
      const timer = new AbortController();
      const finished = await Promise.race([
        cur.done.then(() => true),
        sleep(timeoutMs, false, { signal: timer.signal }).catch(() => true),
      ]);
      timer.abort(); // a pending timer would hold the process open for the whole timeout
      if (!finished) {
        this.o.log.warn({ job: cur.job.id }, 'shutdown deadline reached: cancelling the running job');
        cur.abort.abort(new CancelledError('cancelled: the worker is shutting down'));
        // A job stuck in a call that cannot be interrupted does not hold the shutdown: its lease
        // runs out and whoever notices cleans up after it.
        const grace = new AbortController();
        const stopped = await Promise.race([
          cur.done.then(() => true),
          sleep(STOP_GRACE_MS, false, { signal: grace.signal }).catch(() => true),
        ]);
        grace.abort();
        if (!stopped) {
          this.o.log.error({ job: cur.job.id }, 'the cancelled job did not stop: leaving it to its lease');
          await this.pool.close();
          return false;
        }
      }
    }
    // Idle, the loop has nothing left to wait for but a catalog call (a reap) in a catalog that
    // may have stopped answering: it gets the same time as a job, then is left behind.
    if ((await within((this.loop ?? Promise.resolve()).then(() => true), timeoutMs, false)) === false) {
      this.o.log.warn('shutdown deadline reached: leaving a catalog call that has not answered');
    }
    await this.pool.close();
    return true;
  }

  private async run(): Promise<void> {
    const idle = 500; // between claims while the queue is empty
    while (!this.stopping) {
      try {
        await this.reapIfDue();
        // The job, if any, is this worker's current one as soon as the claim settles (see stop).
        this.claiming = this.o.catalog.jobs.claim(this.name, this.o.leaseMs, this.wake.signal).then((job) => job && this.execute(job));
        const current = await this.claiming;
        if (current) {
          await current.done;
          this.current = undefined;
          continue;
        }
      } catch (err) {
        if (!this.stopping) this.o.log.error({ err: (err as Error).message }, 'worker loop error');
      } finally {
        this.claiming = undefined;
      }
      await sleep(idle, undefined, { signal: this.wake.signal }).catch(() => {});
    }
  }

  /**
   * Records how a job ended; while the catalog does not answer, again every second (for a
   * while), as long as the job is still this worker's: a restore that finished during an
   * outage is succeeded, and its backup is given back.
   */
  private async recordOutcome(job: JobRecord, status: 'succeeded' | 'failed' | 'cancelled', outcome: JobOutcome): Promise<boolean> {
    const { catalog, log, leaseMs } = this.o;
    const giveUp = Date.now() + Math.max(2 * leaseMs, OUTCOME_RETRY_MS);
    for (let attempt = 1; ; attempt++) {
      try {
        if (job.kind === 'restore') {
          if ((await catalog.jobs.heartbeat(job.id, this.name, leaseMs)) === undefined) return false;
          await leaveRestorers(catalog, job.backup_id, this.name);
        }
        return await catalog.jobs.finish(job.id, this.name, status, outcome);
      } catch (err) {
        if (this.stopping || Date.now() > giveUp) {
          log.error({ job: job.id, status, err: (err as Error).message }, 'could not record the job outcome');
          return false;
        }
        if (attempt === 1) log.warn({ job: job.id, status, err: (err as Error).message }, 'could not record the job outcome yet: trying again');
        await sleep(1000);
      }
    }
  }

  private async reapIfDue(): Promise<void> {
    if (Date.now() - this.lastReap < this.o.leaseMs / 2) return;
    this.lastReap = Date.now();
    await reapAbandonedJobs(this.o.catalog, this.o.backend, this.o.log);
  }

  /** Starts `job` as this worker's current one. */
  private execute(job: JobRecord): Current {
    const { catalog, log, leaseMs } = this.o;
    const abort = new AbortController();
    let latest: JobProgress | undefined;
    let written: JobProgress | undefined;
    const beat = async () => {
      const progress = latest !== written ? latest : undefined;
      const r = await catalog.jobs.heartbeat(job.id, this.name, leaseMs, progress).catch(() => null);
      if (r === null) return; // the catalog is unreachable for now; the lease still runs
      written = progress ?? written;
      if (r === undefined) abort.abort(new CancelledError(`job ${job.id}: this worker lost its lease`));
      else if (r.cancelRequested) abort.abort(new CancelledError(`job ${job.id} was cancelled`));
    };
    // Renewed well before it runs out; progress reaches the catalog at that bounded rate.
    const timer = setInterval(() => void beat(), Math.max(200, Math.min(leaseMs / 3, 2000)));
    log.info({ job: job.id, kind: job.kind, backup: job.backup_id, attempt: job.attempts }, 'job started');
    const started = Date.now();
    const done = (async () => {
      let status: 'succeeded' | 'failed' | 'cancelled';
      let outcome;
      try {
        await beat(); // a cancel that arrived while the job was being claimed (the executor sees it)
        const holds = async () => (await catalog.jobs.heartbeat(job.id, this.name, leaseMs).catch(() => null)) !== undefined;
        if (this.pool.broken) log.warn({ job: job.id }, 'a hashing/compression thread died: starting new ones');
        this.pool = await renewedIfBroken(this.pool);
        // A cancel asked for after the last heartbeat still stops a backup before it commits, and a
        // restore before its output is finished.
        outcome = await executeJob(job, { ...this.o, pool: this.pool, holds, beforeCommit: beat }, abort.signal, (p) => (latest = p));
        status = 'succeeded';
      } catch (err) {
        const e = abort.signal.aborted && abort.signal.reason instanceof Error ? abort.signal.reason : (err as Error);
        status = e instanceof CancelledError ? 'cancelled' : 'failed';
        outcome = { error: e.message, seconds: (Date.now() - started) / 1000 };
        if (!(e instanceof ChunkvaultError)) log.error({ job: job.id, err: e.stack }, 'unexpected job failure');
      } finally {
        clearInterval(timer);
      }
      const kept = await this.recordOutcome(job, status, outcome);
      log.info({ job: job.id, kind: job.kind, backup: job.backup_id, status, error: outcome.error, seconds: (Date.now() - started) / 1000, recorded: kept }, 'job ended');
    })();
    this.current = { job, abort, done };
    return this.current;
  }
}
