/**
 * What happens to a job whose worker vanished (its lease ran out): the backup it was writing
 * is marked error and its partial objects removed; a restore gives its backup back; a delete,
 * being safe to repeat, is queued again.
 */
import { randomUUID } from 'node:crypto';
import type { Backend } from '../backends/backend.js';
import type { Catalog } from '../catalog/catalog.js';
import type { JobRecord } from '../catalog/jobs.js';
import { rm } from 'node:fs/promises';
import { locate, removeBackupObjects } from '../engine/repository.js';
import { restoreTempPath } from '../engine/restore-output.js';
import { leaveRestorers } from '../engine/restore.js';
import type { Logger } from './log.js';

const DELETE_ATTEMPTS = 3;

export async function reapAbandonedJobs(catalog: Catalog, backend: Backend, log: Logger): Promise<JobRecord[]> {
  await reapOrphanRecords(catalog, log);
  const reaped = await catalog.jobs.reapExpired();
  for (const job of reaped) {
    log.warn({ job: job.id, kind: job.kind, backup: job.backup_id, worker: job.worker }, 'job abandoned: lease expired');
    try {
      await recover(catalog, backend, job);
    } catch (err) {
      log.error({ job: job.id, err: (err as Error).message }, 'recovering an abandoned job failed');
    }
  }
  return reaped;
}

async function recover(catalog: Catalog, backend: Backend, job: JobRecord): Promise<void> {
  const rec = await catalog.get(job.backup_id);
  if (!rec) return;
  if (job.kind === 'restore') {
    // The dead worker's unfinished file, when it was on this host (the target itself is untouched).
    if (typeof job.params.target === 'string' && !job.params.to_existing) {
      await rm(restoreTempPath(job.params.target, `job-${job.id}`), { force: true });
    }
    if (job.worker) await leaveRestorers(catalog, rec.id, job.worker);
    return;
  }
  if (job.kind === 'delete') {
    const attempt = Number(job.params.attempt ?? 1);
    if (attempt < DELETE_ATTEMPTS) {
      await catalog.jobs.enqueue({ id: randomUUID(), kind: 'delete', backup_id: rec.id, resource: job.resource, params: { attempt: attempt + 1 } });
    } else {
      await catalog.update(rec.id, { status: 'error', fail_reason: `delete abandoned ${attempt} times: ${job.error}` }, ['deleting']);
    }
    return;
  }
  if (rec.status !== 'creating' && rec.status !== 'deleting') return;
  let note = '';
  if (rec.repository === backend.url && rec.service_metadata) {
    const report = await removeBackupObjects(backend, locate(rec));
    note = report.failed.length
      ? `; removing its partial objects failed ${report.failed.length} time(s), first: ${report.failed[0]}`
      : `; ${report.deleted} partial object(s) removed`;
  } else if (rec.service_metadata) {
    note = `; partial objects left in ${rec.repository} (not open here)`;
  }
  const patch = rec.status === 'deleting'
    ? { status: 'deleted' as const, deleted_at: new Date().toISOString(), fail_reason: `${job.error}${note}`, worker: null }
    : { status: 'error' as const, fail_reason: `${job.error}${note}`, worker: null };
  await catalog.update(rec.id, patch, [rec.status]);
}

/** How long a record may wait for its job to be queued before it counts as having none. */
export const ORPHAN_AGE_MS = 60_000;

/**
 * Records the API changed whose job was never queued (the catalog failed between the two
 * statements): a backup `creating` or `deleting` that no process writes or deletes, with no
 * job queued or running for it. A backup never started is `error`; a delete never started
 * leaves the backup `error` too (its status before is not known), to be deleted again.
 */
async function reapOrphanRecords(catalog: Catalog, log: Logger): Promise<void> {
  for (const status of ['creating', 'deleting'] as const) {
    for (const rec of await catalog.list({ status })) {
      if (rec.worker || !rec.updated_at || Date.now() - Date.parse(rec.updated_at) < ORPHAN_AGE_MS) continue;
      const pending = [
        ...(await catalog.jobs.list({ backupId: rec.id, status: 'queued', limit: 1 })),
        ...(await catalog.jobs.list({ backupId: rec.id, status: 'running', limit: 1 })),
      ];
      if (pending.length) continue;
      const reason = status === 'creating'
        ? 'its backup job was never queued (the catalog failed as it was asked for)'
        : 'its delete job was never queued (the catalog failed as it was asked for): delete it again';
      if (await catalog.update(rec.id, { status: 'error', fail_reason: reason }, [status])) {
        log.warn({ backup: rec.id, was: status }, reason);
      }
    }
  }
}
