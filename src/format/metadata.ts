import { IntegrityError } from '../errors.js';
import { FORMAT_VERSION } from './naming.js';
import { pyJsonDumps, type PyJson } from './pyjson.js';

/** One data object as `_metadata` lists it: an extent of the volume, uncompressed length and MD5. */
export interface ObjectEntry {
  name: string;
  offset: number;
  length: number;
  md5: string;
  compression: string;
}

/** The fields `_metadata` and `_sha256file` share. */
export interface BackupHeader {
  version: string;
  backupId: string;
  volumeId: string;
  name: string | null;
  description: string | null;
  createdAt: string;
}

/** The `<prefix>_metadata` object: the commit point of a backup. */
export interface BackupMetadata extends BackupHeader {
  parentId: string | null;
  objects: ObjectEntry[];
  volumeMeta: string | null;
  /** Present only when a writer set it; kept verbatim. */
  extraMetadata?: PyJson;
}

export function encodeMetadata(m: BackupMetadata): Buffer {
  const doc: { [k: string]: PyJson } = {
    backup_description: m.description,
    backup_id: m.backupId,
    backup_name: m.name,
    created_at: m.createdAt,
    objects: m.objects.map((o) => ({
      [o.name]: { compression: o.compression, length: o.length, md5: o.md5, offset: o.offset },
    })),
    parent_id: m.parentId,
    version: m.version,
    volume_id: m.volumeId,
    volume_meta: m.volumeMeta,
  };
  if (m.extraMetadata) doc.extra_metadata = m.extraMetadata;
  return Buffer.from(pyJsonDumps(doc), 'utf8');
}

type Where = { backupId?: string; object: string };

function fail(where: Where, what: string): never {
  throw new IntegrityError(`${where.object}: ${what}`, where);
}

function parseJsonObject(raw: Buffer, where: Where): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    fail(where, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) fail(where, 'not a JSON object');
  return doc as Record<string, unknown>;
}

function optString(doc: Record<string, unknown>, key: string, where: Where): string | null {
  const v = doc[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') fail(where, `"${key}" must be a string or null`);
  return v;
}

function reqString(doc: Record<string, unknown>, key: string, where: Where): string {
  const v = doc[key];
  if (typeof v !== 'string') fail(where, `"${key}" is missing or not a string`);
  return v;
}

function nonNegInt(v: unknown, what: string, where: Where): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(where, `${what} must be a non-negative integer`);
  return v;
}

/** Parses and validates `_metadata`; unknown keys are ignored as Cinder ignores them. */
export function decodeMetadata(raw: Buffer, where: Where): BackupMetadata {
  const doc = parseJsonObject(raw, where);
  const version = reqString(doc, 'version', where);
  if (version !== FORMAT_VERSION) fail(where, `No support to restore backup version ${version}`);
  if (!Array.isArray(doc.objects)) fail(where, '"objects" is missing or not a list');
  const objects = (doc.objects as unknown[]).map((entry, i): ObjectEntry => {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry) || Object.keys(entry).length !== 1) {
      fail(where, `objects[${i}] must be an object with exactly one key`);
    }
    const [name, info] = Object.entries(entry as Record<string, unknown>)[0]!;
    if (typeof info !== 'object' || info === null) fail(where, `objects[${i}] (${name}) has no description`);
    const o = info as Record<string, unknown>;
    const md5 = o.md5;
    if (typeof md5 !== 'string' || !/^[0-9a-f]{32}$/i.test(md5)) fail(where, `objects[${i}] (${name}) has no valid md5`);
    if (typeof o.compression !== 'string' && o.compression !== null && o.compression !== undefined) {
      fail(where, `objects[${i}] (${name}) has an invalid compression label`);
    }
    return {
      name,
      offset: nonNegInt(o.offset, `objects[${i}] (${name}) offset`, where),
      length: nonNegInt(o.length, `objects[${i}] (${name}) length`, where),
      md5: md5.toLowerCase(),
      compression: (o.compression as string | null | undefined) ?? 'none',
    };
  });
  const volumeMeta = doc.volume_meta;
  return {
    version,
    backupId: reqString(doc, 'backup_id', where),
    volumeId: reqString(doc, 'volume_id', where),
    name: optString(doc, 'backup_name', where),
    description: optString(doc, 'backup_description', where),
    createdAt: optString(doc, 'created_at', where) ?? '',
    parentId: optString(doc, 'parent_id', where),
    objects,
    volumeMeta: typeof volumeMeta === 'string' ? volumeMeta : volumeMeta == null ? null : JSON.stringify(volumeMeta),
    ...(doc.extra_metadata !== undefined ? { extraMetadata: doc.extra_metadata as PyJson } : {}),
  };
}

/** The `<prefix>_sha256file` object: one SHA-256 per sha block of the whole volume. */
export interface Sha256File extends BackupHeader {
  /** The sha block size (Cinder calls it chunk_size). */
  blockSize: number;
  sha256s: string[];
}

export function encodeSha256File(s: Sha256File): Buffer {
  return Buffer.from(
    pyJsonDumps({
      backup_description: s.description,
      backup_id: s.backupId,
      backup_name: s.name,
      chunk_size: s.blockSize,
      created_at: s.createdAt,
      sha256s: s.sha256s,
      version: s.version,
      volume_id: s.volumeId,
    }),
    'utf8',
  );
}

export function decodeSha256File(raw: Buffer, where: Where): Sha256File {
  const doc = parseJsonObject(raw, where);
  const blockSize = doc.chunk_size;
  if (typeof blockSize !== 'number' || !Number.isSafeInteger(blockSize) || blockSize <= 0) {
    fail(where, '"chunk_size" (the sha block size) must be a positive integer');
  }
  if (!Array.isArray(doc.sha256s)) fail(where, '"sha256s" is missing or not a list');
  const sha256s = (doc.sha256s as unknown[]).map((h, i) => {
    if (typeof h !== 'string' || !/^[0-9a-f]{64}$/i.test(h)) fail(where, `sha256s[${i}] is not a SHA-256 hex digest`);
    return h.toLowerCase();
  });
  return {
    version: typeof doc.version === 'string' ? doc.version : FORMAT_VERSION,
    backupId: typeof doc.backup_id === 'string' ? doc.backup_id : '',
    volumeId: typeof doc.volume_id === 'string' ? doc.volume_id : '',
    name: optString(doc, 'backup_name', where),
    description: optString(doc, 'backup_description', where),
    createdAt: optString(doc, 'created_at', where) ?? '',
    blockSize,
    sha256s,
  };
}
