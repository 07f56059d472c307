/**
 * Runs one claimed job with the same engine as the command line: backup, restore or delete.
 * Whatever happens, the backup record ends in a truthful status.
 */
import type { Backend } from '../backends/backend.js';
import type { Catalog } from '../catalog/catalog.js';
import type { JobOutcome, JobProgress, JobRecord } from '../catalog/jobs.js';
import { runBackup } from '../engine/backup.js';
import { deleteBackup } from '../engine/delete.js';
import type { ProgressEvent } from '../engine/progress.js';
import { restoreBackup } from '../engine/restore.js';
import { openSource } from '../engine/source.js';
import type { WorkerPool } from '../engine/worker-pool.js';
import { ConflictError, InvalidInputError } from '../errors.js';
import { snakeCaseKeys } from '../format/snake-case.js';
import type { AllowList } from './allow-list.js';
import type { BackupJobParams, RestoreJobParams } from './requests.js';

export interface ExecutorDeps {
  backend: Backend;
  catalog: Catalog;
  allow: AllowList;
  pool: WorkerPool;
  /** Whether this worker still holds the job (a worker given up for dead must not touch the backup). */
  holds?: () => Promise<boolean>;
  /** Looks for a cancel just before a backup's commit point, or a restore's end (it aborts the job's signal). */
  beforeCommit?: () => Promise<void>;
}

export function progressOf(e: ProgressEvent): JobProgress {
  return {
    bytes_done: e.bytesDone,
    bytes_total: e.bytesTotal ?? null,
    percent: e.percent === undefined ? null : Math.round(e.percent * 10) / 10,
    bytes_per_second: Math.round(e.bytesPerSecond),
  };
}

/** Runs `job`; resolves with its outcome, rejects with the reason it failed or was cancelled. */
export async function executeJob(
  job: JobRecord,
  deps: ExecutorDeps,
  signal: AbortSignal,
  onProgress: (p: JobProgress) => void,
): Promise<JobOutcome> {
  const progress = { onProgress: (e: ProgressEvent) => onProgress(progressOf(e)), progressEveryObjects: 1, progressIntervalMs: 1000 };
  const { backend, catalog, allow, pool } = deps;
  if (job.kind === 'backup') {
    const p = job.params as unknown as BackupJobParams;
    try {
      signal.throwIfAborted(); // cancelled while it was being claimed
      const volume = allow.check('volume', p.volume);
      const source = await openSource(volume);
      try {
        const r = await runBackup({
          backend, catalog, source, volumeId: p.volume_id, backupId: job.backup_id, recordExists: true,
          incremental: p.incremental, parentId: p.parent_id ?? undefined, compression: p.compression,
          chunkSize: p.chunk_size, container: p.container, name: p.name, description: p.description, signal, pool,
          beforeCommit: deps.beforeCommit, ...progress,
        });
        return { result: snakeCaseKeys(r), bytes: r.bytes, seconds: r.seconds, retries: r.retries };
      } finally {
        await source.close();
      }
    } catch (err) {
      // Failures before the engine took over leave the record as the API made it: say what happened.
      await catalog.update(job.backup_id, { status: 'error', fail_reason: (err as Error).message, worker: null }, ['creating']);
      await catalog.update(job.backup_id, {
        status: 'deleted', deleted_at: new Date().toISOString(), fail_reason: 'deleted before it started', worker: null,
      }, ['deleting']);
      throw err;
    }
  }
  if (job.kind === 'restore') {
    signal.throwIfAborted(); // nothing changed yet
    const p = job.params as unknown as RestoreJobParams;
    const target = allow.check('target', p.target);
    // The backup is `restoring` meanwhile; a worker that lost its job leaves the status alone.
    const r = await restoreBackup({
      backend, catalog, backupId: job.backup_id, target, force: p.force, toExisting: p.to_existing, signal, pool,
      tempTag: `job-${job.id}`, release: deps.holds, beforeCommit: deps.beforeCommit, ...progress,
    });
    return { result: snakeCaseKeys(r), bytes: r.bytes, seconds: r.seconds, retries: r.retries };
  }
  const started = Date.now();
  try {
    signal.throwIfAborted();
    const r = await deleteBackup({ backend, catalog, backupId: job.backup_id, signal });
    return { result: snakeCaseKeys(r), bytes: 0, seconds: (Date.now() - started) / 1000, retries: r.retries };
  } catch (err) {
    // Refused (an incremental now depends on it, ...) or cancelled before it began: nothing was
    // removed, and the backup is given back (removals that began leave it `error` themselves).
    if (signal.aborted || err instanceof ConflictError || err instanceof InvalidInputError) await giveBackDelete(catalog, job);
    throw err;
  }
}

/**
 * The status a backup had before a delete job that removed nothing: its old one, unless an
 * earlier attempt of the delete (whose worker died) may have begun removing its objects.
 */
export async function giveBackDelete(catalog: Catalog, job: JobRecord): Promise<void> {
  if (Number(job.params.attempt ?? 1) > 1) {
    await catalog.update(job.backup_id, {
      status: 'error', fail_reason: 'delete cancelled after an earlier attempt had begun removing its objects: delete it again', worker: null,
    }, ['deleting']);
  } else {
    await catalog.update(job.backup_id, { status: job.params.previous_status === 'error' ? 'error' : 'available', worker: null }, ['deleting']);
  }
}
