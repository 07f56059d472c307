/**
 * The catalog seam: Cinder's `backups` table, kept outside the repository. SQLite is the
 * embedded default; other implementations share the contract and the conformance suite.
 */
import { NotFoundError } from '../errors.js';
import type { JobQueue } from './jobs.js';

export const BACKUP_STATUSES = ['creating', 'available', 'error', 'deleting', 'deleted', 'restoring'] as const;
export type BackupStatus = (typeof BACKUP_STATUSES)[number];

export interface BackupRecord {
  id: string;
  volume_id: string;
  parent_id: string | null;
  /** Repository address (no secrets): which repository `container` lives in. */
  repository: string;
  container: string | null;
  /** The object-name prefix (Cinder keeps it in `service_metadata`). */
  service_metadata: string | null;
  status: BackupStatus;
  fail_reason: string | null;
  /** Volume size in GiB, rounded up, as Cinder records it. */
  size: number;
  /** Exact volume length in bytes. */
  volume_bytes: number | null;
  object_count: number;
  /** Bytes stored in data objects. */
  stored_bytes: number | null;
  display_name: string | null;
  display_description: string | null;
  availability_zone: string | null;
  host: string | null;
  service: string | null;
  compression: string | null;
  chunk_size: number | null;
  sha_block_size: number | null;
  source: string | null;
  /** host:pid of the process writing this backup while it is `creating` (or deleting it while `deleting`); of each process restoring it while `restoring`, separated by spaces. */
  worker: string | null;
  created_at: string;
  updated_at: string | null;
  deleted_at: string | null;
  data_timestamp: string | null;
  /** Derived: backups (not deleted) whose parent is this one. */
  num_dependent_backups: number;
}

export type NewBackupRecord = Omit<BackupRecord, 'num_dependent_backups' | 'updated_at' | 'deleted_at'>;
export type BackupPatch = Partial<Omit<BackupRecord, 'id' | 'num_dependent_backups'>>;

export interface BackupFilter {
  volumeId?: string;
  status?: BackupStatus;
  repository?: string;
  /** Exact display name. */
  name?: string;
  /** Include `deleted` records (hidden by default). */
  includeDeleted?: boolean;
  /** Pagination: only records after this id (in list order), at most `limit` of them. */
  marker?: string;
  limit?: number;
}

export interface Catalog {
  /** The service's job queue, kept in the same database. */
  readonly jobs: JobQueue;
  /** Inserts a new record; an existing id rejects with ConflictError. */
  create(record: NewBackupRecord): Promise<BackupRecord>;
  /** The record, or undefined. */
  get(id: string): Promise<BackupRecord | undefined>;
  /**
   * Applies `patch` (and bumps updated_at). With `ifStatus`, only when the current status
   * is one of those: the compare-and-set that makes status transitions safe between
   * processes; with `ifWorker` too, only when `worker` is that (null included). Returns
   * whether the record was changed.
   */
  update(id: string, patch: BackupPatch, ifStatus?: BackupStatus[], ifWorker?: string | null): Promise<boolean>;
  /** Records matching the filter, oldest first (ties in creation order). An unknown marker is a NotFoundError. */
  list(filter?: BackupFilter): Promise<BackupRecord[]>;
  /** Removes a record for good (import conflicts, tests); normal deletes set status `deleted`. */
  purge(id: string): Promise<void>;
  close(): Promise<void>;
}

/** The record of a backup that exists (deleted ones do not), or a NotFoundError naming it. */
export async function requireBackup(catalog: Catalog, id: string, what = 'backup'): Promise<BackupRecord> {
  const rec = await catalog.get(id);
  if (!rec) throw new NotFoundError(`${what} ${id} is not in the catalog`, { backupId: id });
  if (rec.status === 'deleted') {
    throw new NotFoundError(`${what} ${id} was deleted${rec.deleted_at ? ` at ${rec.deleted_at}` : ''}`, { backupId: id });
  }
  return rec;
}
