/**
 * Cinder's backup-export encoding (`Backup.encode_record`): base64 of a JSON object holding
 * every backup field (datetimes as `YYYY-MM-DDTHH:MM:SSZ`) plus `driver_info`. Records move
 * between Cinder (`cinder backup-export` / `backup-import`) and chunkvault in both directions.
 */
import type { BackendKind } from '../backends/backend.js';
import type { BackupRecord } from '../catalog/catalog.js';
import { InvalidInputError } from '../errors.js';
import { parsePythonDatetime } from './naming.js';

export const CINDER_DRIVER_CLASS: Record<BackendKind, string> = {
  posix: 'cinder.backup.drivers.posix.PosixBackupDriver',
  s3: 'cinder.backup.drivers.s3.S3BackupDriver',
  swift: 'cinder.backup.drivers.swift.SwiftBackupDriver',
};

function cinderTime(iso: string | null): string | null {
  if (!iso) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d.toISOString().slice(0, 19) + 'Z';
}

/** Escapes non-ASCII as \uXXXX, as Python's json does by default. */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

export function encodeRecord(r: BackupRecord): string {
  const doc = {
    driver_info: {},
    id: r.id,
    user_id: null,
    project_id: null,
    volume_id: r.volume_id,
    host: r.host,
    availability_zone: r.availability_zone,
    container: r.container,
    parent_id: r.parent_id,
    status: r.status,
    fail_reason: r.fail_reason,
    size: r.size,
    display_name: r.display_name,
    display_description: r.display_description,
    service_metadata: r.service_metadata,
    service: r.service,
    object_count: r.object_count,
    temp_volume_id: null,
    temp_snapshot_id: null,
    num_dependent_backups: r.num_dependent_backups,
    snapshot_id: null,
    data_timestamp: cinderTime(r.data_timestamp),
    restore_volume_id: null,
    metadata: {},
    encryption_key_id: null,
    created_at: cinderTime(r.created_at),
    updated_at: cinderTime(r.updated_at),
    deleted_at: cinderTime(r.deleted_at),
    deleted: r.status === 'deleted',
  };
  return Buffer.from(asciiJson(doc), 'utf8').toString('base64');
}

/** The fields `cinder backup-import` requires. */
const REQUIRED = ['id', 'display_name', 'display_description', 'container', 'size', 'service_metadata', 'object_count'];

export interface DecodedRecord {
  id: string;
  volume_id: string;
  parent_id: string | null;
  container: string;
  service_metadata: string;
  size: number;
  object_count: number;
  display_name: string | null;
  display_description: string | null;
  availability_zone: string | null;
  host: string | null;
  service: string | null;
  created_at: string;
  data_timestamp: string | null;
}

export function decodeRecord(backupUrl: string): DecodedRecord {
  const text = backupUrl.trim();
  if (!/^[A-Za-z0-9+/=\s]+$/.test(text)) throw new InvalidInputError('backup record is not base64 (expected what backup-export prints as backup_url)');
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(Buffer.from(text, 'base64').toString('utf8'));
  } catch {
    throw new InvalidInputError('backup record does not decode to JSON (expected what backup-export prints as backup_url)');
  }
  if (typeof doc !== 'object' || doc === null) throw new InvalidInputError('backup record is not a JSON object');
  const missing = REQUIRED.filter((k) => !(k in doc));
  if (missing.length) throw new InvalidInputError(`backup record misses ${missing.join(', ')}`);
  const str = (k: string): string | null => (typeof doc[k] === 'string' ? (doc[k] as string) : null);
  const need = (k: string): string => {
    const v = str(k);
    if (v === null) throw new InvalidInputError(`backup record field ${k} must be a string`);
    return v;
  };
  const time = (k: string): string | null => {
    const v = str(k);
    return v ? (parsePythonDatetime(v)?.toISOString() ?? null) : null;
  };
  return {
    id: need('id'),
    volume_id: need('volume_id'),
    parent_id: str('parent_id'),
    container: need('container'),
    service_metadata: need('service_metadata'),
    size: Number(doc.size) || 0,
    object_count: Number(doc.object_count) || 0,
    display_name: str('display_name'),
    display_description: str('display_description'),
    availability_zone: str('availability_zone'),
    host: str('host'),
    service: str('service'),
    created_at: time('created_at') ?? new Date().toISOString(),
    data_timestamp: time('data_timestamp'),
  };
}
