import { setTimeout as sleep } from 'node:timers/promises';
import { countingRetries, type Backend } from '../backends/backend.js';
import { requireBackup, type BackupRecord, type Catalog } from '../catalog/catalog.js';
import { BackendError, ConflictError, InvalidInputError } from '../errors.js';
import { processAlive, THIS_PROCESS } from './processes.js';
import { locate, removeBackupObjects, type RemovalReport } from './repository.js';

export interface DeleteOptions {
  backend: Backend;
  catalog: Catalog;
  backupId: string;
  /** How long to wait for a running writer to stop and clean up after itself. */
  waitMs?: number;
  signal?: AbortSignal;
}

export interface DeleteResult {
  id: string;
  objectsDeleted: number;
  /** The backup was still being written; its writer was told to stop. */
  cancelledRunning: boolean;
  /** Storage calls retried after transient faults. */
  retries: number;
}

/**
 * A backup being restored cannot be deleted while its restoring process runs; one that died
 * (on this host) left it `restoring`, and it is taken back (`available`). Returns the record now.
 */
export async function takeBackFromEndedRestorer(catalog: Catalog, rec: BackupRecord): Promise<BackupRecord> {
  if (rec.status !== 'restoring') return rec;
  if (processAlive(rec.worker)) {
    throw new ConflictError(`backup ${rec.id} is being restored (by ${rec.worker}); delete it when the restore has ended`, { backupId: rec.id });
  }
  await catalog.update(rec.id, { status: 'available', worker: null }, ['restoring']);
  return requireBackup(catalog, rec.id);
}

/**
 * Why a backup with dependents cannot be deleted, naming them and their status (a failed
 * incremental counts too, as in Cinder: it must be deleted first).
 */
export async function dependentsConflict(catalog: Catalog, rec: BackupRecord): Promise<ConflictError> {
  // An incremental always carries its parent's volume id.
  const children = (await catalog.list({ volumeId: rec.volume_id })).filter((c) => c.parent_id === rec.id);
  const named = children.slice(0, 5).map((c) => `${c.id} (${c.status})`).join(', ') + (children.length > 5 ? ', ...' : '');
  const n = Math.max(children.length, rec.num_dependent_backups);
  return new ConflictError(
    `backup ${rec.id} has ${n} dependent incremental backup${n === 1 ? '' : 's'}${named ? `: ${named}` : ''}; delete ${n === 1 ? 'it' : 'those'} first`,
    { backupId: rec.id },
  );
}

/**
 * Deletes a backup as Cinder does, with its safeguards: refused while incrementals depend
 * on it; a backup still being written is cancelled (its writer sees `deleting`, stops and
 * removes its objects); `_metadata` goes first so a half-deleted backup never looks complete.
 */
export async function deleteBackup(o: DeleteOptions): Promise<DeleteResult> {
  const counter = countingRetries(o.backend);
  const r = await deleteWith({ ...o, backend: counter.backend });
  return { ...r, retries: counter.retries() };
}

async function deleteWith(o: DeleteOptions): Promise<Omit<DeleteResult, 'retries'>> {
  let rec = await requireBackup(o.catalog, o.backupId);
  if (rec.num_dependent_backups > 0) throw await dependentsConflict(o.catalog, rec);
  if (rec.repository !== o.backend.url) {
    throw new InvalidInputError(`backup ${rec.id} lives in ${rec.repository}, not in ${o.backend.url} (use --repo)`, { backupId: rec.id });
  }
  rec = await takeBackFromEndedRestorer(o.catalog, rec);
  let cancelledRunning = false;
  if (rec.status === 'creating' && (await o.catalog.update(rec.id, { status: 'deleting' }, ['creating']))) {
    cancelledRunning = true;
    const deadline = Date.now() + (o.waitMs ?? 60_000);
    while (Date.now() < deadline && processAlive(rec.worker)) {
      await sleep(200, undefined, { signal: o.signal });
      const now: BackupRecord | undefined = await o.catalog.get(rec.id);
      if (!now || now.status === 'deleted') return { id: rec.id, objectsDeleted: 0, cancelledRunning };
      rec = now;
    }
  } else if (!(await o.catalog.update(rec.id, { status: 'deleting', worker: THIS_PROCESS }, ['available', 'error', 'deleting']))) {
    const now = await o.catalog.get(rec.id);
    throw new ConflictError(`backup ${rec.id} is ${now?.status ?? 'gone'}; it cannot be deleted now`, { backupId: rec.id });
  } else {
    // An incremental that chose it as its parent just now (see parentKept in backup.ts).
    const now = await requireBackup(o.catalog, rec.id);
    if (now.num_dependent_backups > 0) {
      if (rec.status !== 'deleting') await o.catalog.update(rec.id, { status: rec.status, worker: null }, ['deleting']);
      throw await dependentsConflict(o.catalog, now);
    }
  }
  // A backup that failed before it wrote anything has no prefix, and nothing to remove.
  const report = rec.service_metadata === null ? { deleted: 0, failed: [] } : await removeAll(o, rec);
  if (report.failed.length && report.deleted === 0) {
    // Not even `_metadata` could be removed: the backup is whole, and stays what it was.
    if (rec.status === 'available' || rec.status === 'error') await o.catalog.update(rec.id, { status: rec.status, worker: null }, ['deleting']);
    throw new BackendError(`deleting backup ${rec.id} removed nothing: ${report.failed[0]}`, { backupId: rec.id });
  }
  if (report.failed.length) {
    await o.catalog.update(rec.id, {
      status: 'error',
      fail_reason: `delete incomplete: ${report.failed.length} removal(s) failed: ${report.failed.slice(0, 3).join('; ')}`,
      worker: null,
    });
    throw new BackendError(`deleting backup ${rec.id} is incomplete: ${report.failed.length} removal(s) failed, first: ${report.failed[0]}`, {
      backupId: rec.id,
    });
  }
  await o.catalog.update(rec.id, { status: 'deleted', deleted_at: new Date().toISOString(), worker: null });
  return { id: rec.id, objectsDeleted: report.deleted, cancelledRunning };
}

/**
 * removeBackupObjects, which throws only once `_metadata` is gone (a cancel or shutdown
 * part-way): the backup is no longer whole then, and is left `error`, to be deleted again.
 */
async function removeAll(o: DeleteOptions, rec: BackupRecord): Promise<RemovalReport> {
  try {
    return await removeBackupObjects(o.backend, locate(rec), [], { signal: o.signal });
  } catch (err) {
    const reason = `delete interrupted after its _metadata was removed (${(err as Error).message}): delete it again to remove the rest`;
    await o.catalog.update(rec.id, { status: 'error', fail_reason: reason, worker: null }, ['deleting']);
    throw err;
  }
}
