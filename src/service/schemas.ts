/** Request bodies and query strings of the HTTP API: validated with these, published from them. */
import { z } from 'zod';
import { COMPRESSION_CHOICES } from '../codecs/codec.js';
import { IDENTIFIER } from '../format/naming.js';
import { MAX_CHUNK_SIZE } from '../engine/backup.js';
import { BACKUP_STATUSES } from '../catalog/catalog.js';
import { JOB_KINDS, JOB_STATUSES } from '../catalog/jobs.js';

const id = z.string().regex(IDENTIFIER, 'up to 64 letters, digits, dots, underscores or dashes, starting with a letter or digit');
const text = z.string().max(4096).nullable().optional();

export const CreateBackupBody = z.strictObject({
  volume: z.string().min(1).max(4096).describe('path of the volume on the worker hosts; must be in the allow-list'),
  incremental: z.boolean().optional().describe('store only blocks changed since the latest available backup of the volume'),
  parent_id: id.optional().describe('explicit parent for an incremental backup'),
  name: text,
  description: text,
  volume_id: id.optional().describe('volume id (default: derived from the volume path, as the CLI does)'),
  container: id.optional(),
  compression: z.enum(COMPRESSION_CHOICES as [string, ...string[]]).optional(),
  chunk_size: z.number().int().positive().max(MAX_CHUNK_SIZE).optional(),
});
export type CreateBackupBody = z.infer<typeof CreateBackupBody>;

export const RestoreBody = z.strictObject({
  target: z.string().min(1).max(4096).describe('path to restore to on the worker host; must be in the allow-list'),
  force: z.boolean().optional().describe('replace an existing regular file (atomically)'),
  to_existing: z.boolean().optional().describe('write into an existing file or block device in place'),
});
export type RestoreBody = z.infer<typeof RestoreBody>;

export const ImportBody = z.strictObject({
  backup_service: z.string().min(1).max(255),
  backup_url: z.string().min(1).max(1_000_000),
});

const limit = z.string().regex(/^[0-9]{1,4}$/, 'expected a whole number from 1 to 1000').transform(Number)
  .pipe(z.number().int().min(1).max(1000));

export const ListBackupsQuery = z.strictObject({
  status: z.enum(BACKUP_STATUSES).optional(),
  volume_id: id.optional(),
  name: z.string().max(4096).optional(),
  limit: limit.optional(),
  marker: id.optional(),
});

export const ListJobsQuery = z.strictObject({
  status: z.enum(JOB_STATUSES).optional(),
  kind: z.enum(JOB_KINDS).optional(),
  backup_id: id.optional(),
  limit: limit.optional(),
});

const Progress = z.object({
  bytes_done: z.number(),
  bytes_total: z.number().nullable(),
  percent: z.number().nullable(),
  bytes_per_second: z.number(),
}).nullable();

export const BackupView = z.object({
  id: z.string(),
  name: z.string().nullable(),
  description: z.string().nullable(),
  volume_id: z.string(),
  status: z.enum(BACKUP_STATUSES),
  fail_reason: z.string().nullable(),
  size: z.number().describe('GiB, rounded up, as Cinder records it'),
  volume_bytes: z.number().nullable(),
  stored_bytes: z.number().nullable(),
  object_count: z.number(),
  container: z.string().nullable(),
  parent_id: z.string().nullable(),
  is_incremental: z.boolean(),
  has_dependent_backups: z.boolean(),
  availability_zone: z.string().nullable(),
  compression: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string().nullable(),
  data_timestamp: z.string().nullable(),
  job_id: z.string().nullable().describe('the latest job on this backup (null when it never had one)'),
  progress: Progress,
});

export const JobView = z.object({
  id: z.string(),
  kind: z.enum(['backup', 'restore', 'delete']),
  status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
  backup_id: z.string(),
  params: z.record(z.string(), z.unknown()),
  result: z.record(z.string(), z.unknown()).nullable(),
  progress: Progress,
  error: z.string().nullable(),
  worker: z.string().nullable(),
  attempts: z.number(),
  cancel_requested: z.boolean(),
  created_at: z.string(),
  started_at: z.string().nullable(),
  finished_at: z.string().nullable(),
  updated_at: z.string(),
});

export const ErrorView = z.object({
  error: z.object({ code: z.number(), title: z.string(), message: z.string() }),
});
