/** Reading and removing one backup's objects, located by its catalog record. */
import { constants } from 'node:buffer';
import type { Backend, CallOptions, ObjectRange } from '../backends/backend.js';
import type { BackupRecord } from '../catalog/catalog.js';
import { IntegrityError, InvalidInputError, NotFoundError } from '../errors.js';
import { countFromEnds, decodeMetadata, decodeSha256File, type BackupMetadata, type Sha256File, type Sha256FileShape } from '../format/metadata.js';
import { metadataObjectName, sha256ObjectName } from '../format/naming.js';
import { Sha256FileReader, type Sha256FileRead } from '../format/sha256file-reader.js';

export interface BackupLocation {
  /** The backup id ('' while discovering backups by scanning). */
  id: string;
  container: string;
  prefix: string;
}

export function locate(record: BackupRecord): BackupLocation {
  if (record.container === null || record.service_metadata === null) {
    throw new InvalidInputError(`backup ${record.id} has no container or object prefix in the catalog`, {
      backupId: record.id,
    });
  }
  return { id: record.id, container: record.container, prefix: record.service_metadata };
}

function missing(loc: BackupLocation, name: string, what: string): IntegrityError {
  return new IntegrityError(`backup ${loc.id} is incomplete: its ${what} ${name} is missing from container ${loc.container}`, {
    backupId: loc.id,
    object: name,
    container: loc.container,
  });
}

async function requiring<T>(loc: BackupLocation, name: string, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof NotFoundError) throw missing(loc, name, what);
    throw err;
  }
}

function getRequired(backend: Backend, loc: BackupLocation, name: string, what: string, opts?: CallOptions) {
  return requiring(loc, name, what, () => backend.get(loc.container, name, opts));
}

export async function readMetadata(backend: Backend, loc: BackupLocation, opts?: CallOptions): Promise<BackupMetadata> {
  const name = metadataObjectName(loc.prefix);
  const meta = decodeMetadata(await getRequired(backend, loc, name, 'metadata object', opts), {
    backupId: loc.id,
    object: name,
  });
  if (loc.id && meta.backupId !== loc.id) {
    throw new IntegrityError(`${name}: belongs to backup ${meta.backupId}, not ${loc.id}`, { backupId: loc.id, object: name });
  }
  return meta;
}

/** Bytes asked for per read of a sha256file. */
const SHA256FILE_READ_BYTES = 16 * 1024 * 1024;

/** What a volume length is worked out from: a sha256file's block size and how many blocks it lists. */
export interface BlockCount {
  blockSize: number;
  blocks: number;
}

/**
 * The backup's sha256file, read a piece at a time (one piece ahead) and packed as it comes: a
 * large volume's is gigabytes of text, never held whole. One in another layout than writers
 * use is read whole and decoded by the general reader.
 */
export async function readSha256File(backend: Backend, loc: BackupLocation, opts?: CallOptions): Promise<Sha256File> {
  const read = await readPiecewise(backend, loc, true, opts);
  return { ...read.header, sha256s: read.hashes! };
}

/** Bytes read at each end of a sha256file to count its hashes without reading them. */
const SHA256FILE_END_BYTES = 64 * 1024;

/**
 * How many blocks the backup's sha256file lists. Written as Cinder writes it, its size tells,
 * checked against both its ends; else it is read as `readSha256File` reads it, without keeping
 * the hashes. A restore reads only this of each ancestor: its cost does not grow with the
 * length of the chain beyond two small reads a backup.
 */
export async function readBlockCount(backend: Backend, loc: BackupLocation, opts?: CallOptions): Promise<BlockCount> {
  const shape = await readSha256FileShape(backend, loc, opts);
  const { header, blocks } = shape ?? (await readPiecewise(backend, loc, false, opts));
  return { blockSize: header.blockSize, blocks };
}

/**
 * What the two ends of the backup's sha256file tell when it is written as Cinder writes it
 * (and larger than they are); undefined when it is not, or small.
 */
export async function readSha256FileShape(backend: Backend, loc: BackupLocation, opts?: CallOptions): Promise<Sha256FileShape | undefined> {
  const name = sha256ObjectName(loc.prefix);
  const read = (offset: number) => sha256FileRange(backend, loc, offset, SHA256FILE_END_BYTES, opts);
  const first = await read(0);
  if (first.size <= 2 * SHA256FILE_END_BYTES) return undefined;
  const last = await read(first.size - SHA256FILE_END_BYTES);
  if (last.size !== first.size) return undefined;
  return countFromEnds(first.size, first.bytes, last.bytes, { backupId: loc.id, object: name });
}

/** Up to `length` bytes of the backup's sha256file from `offset`, and its size; a missing one is damage. */
export function sha256FileRange(backend: Backend, loc: BackupLocation, offset: number, length: number, opts?: CallOptions): Promise<ObjectRange> {
  const name = sha256ObjectName(loc.prefix);
  return requiring(loc, name, 'sha256file', () => backend.readRange(loc.container, name, offset, length, opts));
}

async function readPiecewise(backend: Backend, loc: BackupLocation, keep: boolean, opts?: CallOptions): Promise<Sha256FileRead> {
  const name = sha256ObjectName(loc.prefix);
  const where = { backupId: loc.id, object: name };
  const read = (offset: number) => sha256FileRange(backend, loc, offset, SHA256FILE_READ_BYTES, opts);
  const first = await read(0);
  const { size } = first;
  const reader = new Sha256FileReader(size, keep);
  reader.feed(first.bytes);
  let offset = first.bytes.length;
  let ahead = offset < size ? read(offset) : undefined;
  while (ahead && !reader.givenUp) {
    const piece = await ahead;
    if (piece.size !== size || piece.bytes.length === 0) {
      throw new IntegrityError(`${name}: changed while it was read (${size} bytes, then ${piece.size})`, where);
    }
    offset += piece.bytes.length;
    ahead = offset < size ? read(offset) : undefined;
    reader.feed(piece.bytes);
  }
  // A read still under way is not waited for: its failure must not go unhandled.
  ahead?.catch(() => {});
  const done = reader.ended(where);
  if (done) return done;
  if (size > constants.MAX_LENGTH) {
    throw new IntegrityError(`${name}: not a sha256file in the layout Cinder writes, and at ${size} bytes too large to read whole`, where);
  }
  const { sha256s, ...header } = decodeSha256File(await getRequired(backend, loc, name, 'sha256file', opts), where);
  return { header, blocks: sha256s.length, ...(keep ? { hashes: sha256s } : {}) };
}

/** The backup's sha256file is there (looked up, not read). */
export async function requireSha256File(backend: Backend, loc: BackupLocation, opts?: CallOptions): Promise<void> {
  const name = sha256ObjectName(loc.prefix);
  if (!(await backend.exists(loc.container, name, opts))) throw missing(loc, name, 'sha256file');
}

/** Names of the data objects present under the backup's prefix. */
export async function listDataObjects(backend: Backend, loc: BackupLocation, opts?: CallOptions): Promise<string[]> {
  const skip = new Set([metadataObjectName(loc.prefix), sha256ObjectName(loc.prefix)]);
  const names: string[] = [];
  for await (const name of backend.list(loc.container, loc.prefix, opts)) if (!skip.has(name)) names.push(name);
  return names;
}

/**
 * Cinder's restore check: the objects under the prefix must be exactly those the metadata
 * lists (any stray object makes Cinder refuse the backup).
 */
export async function checkListing(backend: Backend, loc: BackupLocation, meta: BackupMetadata, opts?: CallOptions) {
  const present = new Set(await listDataObjects(backend, loc, opts));
  const expected = new Set(meta.objects.map((o) => o.name));
  for (const o of meta.objects) {
    if (!present.has(o.name)) {
      throw new IntegrityError(`backup ${loc.id}: object ${o.name} (offset ${o.offset}) listed in its metadata is missing`, {
        backupId: loc.id,
        object: o.name,
        offset: o.offset,
      });
    }
  }
  for (const name of present) {
    if (!expected.has(name)) {
      throw new IntegrityError(
        `backup ${loc.id}: object ${name} in container ${loc.container} has the backup's prefix but is not in its metadata`,
        { backupId: loc.id, object: name },
      );
    }
  }
}

export interface RemovalReport {
  deleted: number;
  /** Objects that could not be removed (name: reason). */
  failed: string[];
}

/**
 * Removes every object of a backup: `_metadata` first, so a half-deleted backup never looks
 * complete, then everything listed under the prefix plus `known` names (in case listing
 * misses some). Missing objects are fine; failures are collected, not hidden.
 */
export async function removeBackupObjects(
  backend: Backend,
  loc: BackupLocation,
  known: Iterable<string> = [],
  opts?: CallOptions,
): Promise<RemovalReport> {
  const report: RemovalReport = { deleted: 0, failed: [] };
  const remove = async (name: string) => {
    try {
      await backend.delete(loc.container, name, opts);
      report.deleted++;
    } catch (err) {
      report.failed.push(`${name}: ${(err as Error).message}`);
    }
  };
  const meta = metadataObjectName(loc.prefix);
  await remove(meta);
  if (report.failed.length) return report; // never delete data that a complete-looking backup still references
  await backend.flush(loc.container, opts);
  const names = new Set(known);
  try {
    for await (const name of backend.list(loc.container, loc.prefix, opts)) names.add(name);
  } catch (err) {
    report.failed.push(`listing ${loc.container}/${loc.prefix}* failed, so objects of it may remain: ${(err as Error).message}`);
  }
  names.delete(meta);
  const queue = [...names];
  const workers = Array.from({ length: Math.min(8, queue.length) }, async () => {
    for (let name = queue.pop(); name !== undefined; name = queue.pop()) await remove(name);
  });
  await Promise.all(workers);
  await backend.sweep?.(loc.container, loc.prefix, opts).catch((err: Error) => void report.failed.push(err.message));
  await backend.flush(loc.container, opts);
  return report;
}
