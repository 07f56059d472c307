/**
 * What the API asks of the catalog: requests become records and queued jobs; the workers do
 * the work. Every check that can refuse a request runs before anything is written.
 */
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { Backend } from '../backends/backend.js';
import { requireBackup, type BackupRecord, type Catalog } from '../catalog/catalog.js';
import { checkChunkSize, DEFAULT_COMPRESSION, DEFAULT_SHA_BLOCK_SIZE, PARENT_STATUSES, requireParent } from '../engine/backup.js';
import { dependentsConflict, takeBackFromEndedRestorer } from '../engine/delete.js';
import { giveBackDelete } from './executor.js';
import type { JobRecord } from '../catalog/jobs.js';
import { CINDER_DRIVER_CLASS } from '../format/record.js';
import { defaultContainer } from '../format/naming.js';
import { canonicalSourcePath, volumeIdForPath } from '../engine/source.js';
import { writerLabel } from '../codecs/codec.js';
import { ConflictError, InvalidInputError, NotFoundError } from '../errors.js';
import type { AllowList } from './allow-list.js';
import type { CreateBackupBody, RestoreBody } from './schemas.js';

export interface BackupJobParams {
  volume: string;
  volume_id: string;
  incremental: boolean;
  parent_id: string | null;
  compression: string;
  chunk_size?: number;
  container: string;
  name: string | null;
  description: string | null;
}

export interface RestoreJobParams {
  target: string;
  force: boolean;
  to_existing: boolean;
}

export class Requests {
  constructor(
    private readonly catalog: Catalog,
    private readonly backend: Backend,
    private readonly allow: AllowList,
  ) {}

  record(id: string): Promise<BackupRecord> {
    return requireBackup(this.catalog, id);
  }

  async job(id: string): Promise<JobRecord> {
    const job = await this.catalog.jobs.get(id);
    if (!job) throw new NotFoundError(`job ${id} does not exist`);
    return job;
  }

  async createBackup(body: CreateBackupBody): Promise<{ backup: BackupRecord; job: JobRecord }> {
    const volume = this.allow.check('volume', body.volume);
    const volumeId = body.volume_id ?? volumeIdForPath(canonicalSourcePath(volume));
    const compression = writerLabel(body.compression ?? DEFAULT_COMPRESSION);
    // An incremental keeps its parent's sha block size (a parent not yet written uses the default).
    let shaBlockSize = DEFAULT_SHA_BLOCK_SIZE;
    if (body.parent_id) {
      shaBlockSize = (await requireParent(this.catalog, this.backend, body.parent_id, volumeId)).sha_block_size ?? shaBlockSize;
    } else if (body.incremental) {
      // The parent is chosen when the job runs: a full backup still queued counts.
      const base = (await this.catalog.list({ volumeId, repository: this.backend.url }))
        .filter((r) => r.status === 'creating' || PARENT_STATUSES.includes(r.status));
      if (!base.length) {
        throw new InvalidInputError(`no backup of volume ${volumeId} to base an incremental backup on; make a full backup first`);
      }
      shaBlockSize = base.at(-1)!.sha_block_size ?? shaBlockSize;
    }
    // Refused here, as the command line refuses it, rather than by the job once it runs.
    if (body.chunk_size !== undefined) checkChunkSize(body.chunk_size, shaBlockSize, 'chunk_size');
    const id = randomUUID();
    const container = body.container ?? this.backend.defaultContainer ?? defaultContainer(this.backend.kind, id);
    const now = new Date().toISOString();
    const backup = await this.catalog.create({
      id, volume_id: volumeId, parent_id: body.parent_id ?? null, repository: this.backend.url, container,
      service_metadata: null, status: 'creating', fail_reason: null, size: 0, volume_bytes: null, object_count: 0,
      stored_bytes: null, display_name: body.name ?? null, display_description: body.description ?? null,
      availability_zone: 'nova', host: null, service: CINDER_DRIVER_CLASS[this.backend.kind], compression,
      chunk_size: body.chunk_size ?? null, sha_block_size: null, source: volume, worker: null, created_at: now,
      data_timestamp: now,
    });
    const params: BackupJobParams = {
      volume, volume_id: volumeId, incremental: !!body.incremental || !!body.parent_id, parent_id: body.parent_id ?? null,
      compression, chunk_size: body.chunk_size, container, name: body.name ?? null, description: body.description ?? null,
    };
    try {
      const job = await this.catalog.jobs.enqueue({
        id: randomUUID(), kind: 'backup', backup_id: id, resource: `volume:${volumeId}`, params: { ...params },
      });
      return { backup, job };
    } catch (err) {
      await this.catalog.update(id, { status: 'error', fail_reason: `could not queue the backup: ${(err as Error).message}` });
      throw err;
    }
  }

  async restore(id: string, body: RestoreBody): Promise<JobRecord> {
    const rec = await this.record(id);
    const target = this.allow.check('target', body.target);
    if (body.force && body.to_existing) throw new InvalidInputError('force and to_existing exclude each other');
    const st = await stat(target).catch(() => undefined);
    if (st?.isDirectory()) throw new InvalidInputError(`target '${target}' is a directory, not a file, a block device or a named pipe`);
    if (st && !st.isFIFO() && !body.to_existing && !(body.force && st.isFile())) {
      throw new InvalidInputError(`target '${target}' exists: set to_existing to write into it in place${st.isFile() ? ', or force to replace it' : ''}`);
    }
    if (rec.status !== 'available') throw new ConflictError(`backup ${id} is ${rec.status}, not available: it cannot be restored now`);
    if (rec.repository !== this.backend.url) throw new InvalidInputError(`backup ${id} lives in ${rec.repository}, which this service does not serve`);
    const params: RestoreJobParams = { target, force: !!body.force, to_existing: !!body.to_existing };
    return this.catalog.jobs.enqueue({ id: randomUUID(), kind: 'restore', backup_id: id, resource: `backup:${id}`, params: { ...params } });
  }

  /**
   * Deletes as Cinder does: refused while incrementals depend on the backup; a backup not yet
   * started is dropped, a running one is cancelled (its writer removes what it wrote), an
   * available one is removed by a delete job.
   */
  async delete(id: string): Promise<{ backup: BackupRecord; job: JobRecord | null }> {
    let rec = await this.record(id);
    if (rec.num_dependent_backups > 0) throw await dependentsConflict(this.catalog, rec);
    if (rec.status === 'creating') {
      const [writer] = await this.catalog.jobs.list({ backupId: id, kind: 'backup', limit: 1 });
      const cancelled = writer ? await this.catalog.jobs.cancel(writer.id) : undefined;
      if (cancelled?.status === 'cancelled') {
        await this.catalog.update(id, { status: 'deleted', deleted_at: new Date().toISOString(), fail_reason: 'cancelled before it started' }, ['creating']);
      } else if (!(await this.catalog.update(id, { status: 'deleting' }, ['creating']))) {
        throw new ConflictError(`backup ${id} changed status while it was being deleted; try again`);
      }
      return { backup: (await this.catalog.get(id)) ?? rec, job: writer ?? null };
    }
    if (rec.repository !== this.backend.url) throw new InvalidInputError(`backup ${id} lives in ${rec.repository}, which this service does not serve`);
    // Jobs on one backup run in order: a restore asked for first is not overtaken by the delete.
    const [waiting] = await this.catalog.jobs.list({ backupId: id, status: 'queued', kind: 'restore', limit: 1 });
    if (waiting) throw new ConflictError(`backup ${id} has a queued restore (job ${waiting.id}); cancel it or let it finish first`);
    rec = await takeBackFromEndedRestorer(this.catalog, rec);
    if (!(await this.catalog.update(id, { status: 'deleting' }, ['available', 'error']))) {
      const now = await this.record(id);
      throw new ConflictError(`backup ${id} is ${now.status}; it cannot be deleted now`);
    }
    // Cancelling the delete before it starts gives the backup its status back.
    const params = { attempt: 1, previous_status: rec.status };
    const job = await this.catalog.jobs.enqueue({ id: randomUUID(), kind: 'delete', backup_id: id, resource: `backup:${id}`, params });
    return { backup: await this.record(id), job };
  }

  async cancelJob(id: string): Promise<JobRecord> {
    const job = await this.job(id);
    const now = await this.catalog.jobs.cancel(id);
    if (!now) throw new ConflictError(`job ${id} has already ended (${job.status})`);
    if (now.status === 'cancelled' && now.kind === 'backup') {
      await this.catalog.update(now.backup_id, { status: 'error', fail_reason: 'cancelled before it started' }, ['creating']);
    }
    if (now.status === 'cancelled' && now.kind === 'delete') await giveBackDelete(this.catalog, now);
    return now;
  }
}
