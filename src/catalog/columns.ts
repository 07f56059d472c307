import type { BackupRecord } from './catalog.js';

/** Every stored column of a backup record (num_dependent_backups is derived, not stored). */
export const CATALOG_COLUMNS: readonly (keyof BackupRecord)[] = [
  'id', 'volume_id', 'parent_id', 'repository', 'container', 'service_metadata', 'status', 'fail_reason',
  'size', 'volume_bytes', 'object_count', 'stored_bytes', 'display_name', 'display_description',
  'availability_zone', 'host', 'service', 'compression', 'chunk_size', 'sha_block_size', 'source', 'worker',
  'created_at', 'updated_at', 'deleted_at', 'data_timestamp',
];
