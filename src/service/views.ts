/** Catalog rows as the API shows them (Cinder's field names where Cinder has the field). */
import type { BackupRecord } from '../catalog/catalog.js';
import type { JobRecord } from '../catalog/jobs.js';

export function backupView(r: BackupRecord, job?: JobRecord) {
  const active = job && (job.status === 'running' || job.status === 'queued');
  return {
    id: r.id,
    name: r.display_name,
    description: r.display_description,
    volume_id: r.volume_id,
    status: r.status,
    fail_reason: r.fail_reason,
    size: r.size,
    volume_bytes: r.volume_bytes,
    stored_bytes: r.stored_bytes,
    object_count: r.object_count,
    container: r.container,
    parent_id: r.parent_id,
    is_incremental: r.parent_id !== null,
    has_dependent_backups: r.num_dependent_backups > 0,
    availability_zone: r.availability_zone,
    compression: r.compression,
    created_at: r.created_at,
    updated_at: r.updated_at,
    data_timestamp: r.data_timestamp,
    job_id: job?.id ?? null,
    progress: active ? job.progress ?? { bytes_done: 0, bytes_total: null, percent: 0, bytes_per_second: 0 } : null,
  };
}

export function jobView(j: JobRecord) {
  const { resource: _r, lease_expires_at: _l, bytes: _b, seconds: _s, retries: _t, ...rest } = j;
  return rest;
}
