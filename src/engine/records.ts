/** Moving catalog records in and out: repository scans and Cinder's export format. */
import type { Backend } from '../backends/backend.js';
import { requireBackup, type BackupRecord, type Catalog } from '../catalog/catalog.js';
import { ConflictError, IntegrityError, NotFoundError } from '../errors.js';
import type { BackupMetadata } from '../format/metadata.js';
import { parsePythonDatetime } from '../format/naming.js';
import { CINDER_DRIVER_CLASS, decodeRecord, encodeRecord } from '../format/record.js';
import { processAlive } from './processes.js';
import { locate, readBlockCount, readMetadata, removeBackupObjects, type BackupLocation, type BlockCount } from './repository.js';
import { PARENT_STATUSES } from './backup.js';
import { layerLength, objectsEnd } from './restore.js';

const GiB = 1024 ** 3;
const SUFFIX = '_metadata';

/** Every backup in the repository: each `<prefix>_metadata` object is one. */
export async function* findBackups(backend: Backend, containers: string[], signal?: AbortSignal): AsyncIterable<{ container: string; prefix: string }> {
  for (const root of containers) {
    for await (const name of backend.list(root, '', { signal })) {
      if (!name.endsWith(SUFFIX)) continue;
      const stem = name.slice(0, -SUFFIX.length);
      if (backend.nestedContainers) {
        const cut = stem.lastIndexOf('/');
        const container = [root, stem.slice(0, Math.max(cut, 0))].filter(Boolean).join('/');
        yield { container, prefix: stem.slice(cut + 1) };
      } else {
        yield { container: root, prefix: stem };
      }
    }
  }
}

export interface RebuildReport {
  added: string[];
  known: string[];
  unreadable: string[];
  /** Known records set right: left `creating` or `restoring` by a process of this host that died. */
  repaired: string[];
}

/**
 * Recreates catalog records from a repository scan (how existing Cinder backups are
 * adopted: Cinder keeps its records outside the repository).
 */
export async function rebuildCatalog(backend: Backend, catalog: Catalog, containers: string[], signal?: AbortSignal): Promise<RebuildReport> {
  const report: RebuildReport = { added: [], known: [], unreadable: [], repaired: [] };
  // Of each sha256file only its block count is kept: a repository may hold many of hundreds of MB.
  const found = new Map<string, { loc: BackupLocation; meta: BackupMetadata; sha?: BlockCount }>();
  for await (const { container, prefix } of findBackups(backend, containers, signal)) {
    const probe: BackupLocation = { id: '', container, prefix }; // id unknown until read
    try {
      const meta = await readMetadata(backend, probe, { signal });
      const loc = { ...probe, id: meta.backupId };
      const sha = await unlessMissingOrDamaged(readBlockCount(backend, loc, { signal }));
      found.set(meta.backupId, { loc, meta, sha });
    } catch (err) {
      report.unreadable.push(`${container}/${prefix}${SUFFIX}: ${(err as Error).message}`);
    }
  }
  // Exact volume lengths, null where the repository does not tell one. A full backup's objects
  // cover its volume. An incremental's length needs its own sha256file (its block count) and,
  // unless its last block is stored, its parent's length: chains are visited from their roots.
  const lengths = new Map<string, number | null>();
  const lengthOf = (id: string, depth = 0): number | null => {
    const f = found.get(id);
    if (!f || depth > found.size) return null;
    let bytes = lengths.get(id);
    if (bytes === undefined) {
      const parentBytes = f.meta.parentId ? lengthOf(f.meta.parentId, depth + 1) : null;
      try {
        if (f.sha) bytes = layerLength(f.meta, f.sha, parentBytes === null ? undefined : { bytes: parentBytes }, id);
        else bytes = !f.meta.parentId && objectsEnd(f.meta) > 0 ? objectsEnd(f.meta) : null;
      } catch {
        bytes = null; // restore and verify say what is wrong
      }
      lengths.set(id, bytes);
    }
    return bytes;
  };
  // Oldest first, and a parent always before its children: the catalog orders backups made in
  // the same second (names and metadata have whole seconds) by when they were added.
  const byAge = [...found.values()].sort((a, b) => a.meta.createdAt.localeCompare(b.meta.createdAt));
  const ordered: typeof byAge = [];
  const placed = new Set<string>();
  const place = (f: (typeof byAge)[number], depth = 0) => {
    if (placed.has(f.meta.backupId)) return;
    placed.add(f.meta.backupId);
    const parent = f.meta.parentId ? found.get(f.meta.parentId) : undefined;
    if (parent && depth < found.size) place(parent, depth + 1);
    ordered.push(f);
  };
  for (const f of byAge) place(f);
  for (const { loc, meta, sha } of ordered) {
    const bytes = lengthOf(meta.backupId);
    const known = await catalog.get(meta.backupId);
    if (known) {
      report.known.push(meta.backupId);
      // `_metadata` is the commit point: a writer that died after it left a complete backup.
      if (known.status === 'creating' && known.worker && !processAlive(known.worker)) {
        const done = await catalog.update(meta.backupId, {
          status: 'available', worker: null, object_count: meta.objects.length, volume_bytes: bytes,
          size: bytes === null ? known.size : Math.max(1, Math.ceil(bytes / GiB)),
        }, ['creating']);
        if (done) report.repaired.push(`${meta.backupId}: complete, now available (its writer ${known.worker} ended before recording it)`);
      } else if (known.volume_bytes === null && bytes !== null && PARENT_STATUSES.includes(known.status)) {
        // Adopted when its length could not be told (a sha256file unreadable then): told now.
        const told = await catalog.update(meta.backupId, {
          volume_bytes: bytes, size: known.size || Math.max(1, Math.ceil(bytes / GiB)),
        }, [known.status]);
        if (told) report.repaired.push(`${meta.backupId}: its volume length is ${bytes} bytes`);
      }
      continue;
    }
    let size = bytes === null ? 0 : Math.max(1, Math.ceil(bytes / GiB));
    try {
      const vm = meta.volumeMeta ? JSON.parse(meta.volumeMeta) : undefined;
      if (typeof vm?.['volume-base-metadata']?.size === 'number') size = vm['volume-base-metadata'].size;
    } catch {
      // volume_meta is informational; an unreadable one does not stop adoption
    }
    const created = (parsePythonDatetime(meta.createdAt) ?? new Date()).toISOString();
    const labels = [...new Set(meta.objects.map((o) => o.compression))].filter((l) => l !== 'none');
    await catalog.create({
      id: meta.backupId, volume_id: meta.volumeId, parent_id: meta.parentId, repository: backend.url,
      container: loc.container, service_metadata: loc.prefix, status: 'available', fail_reason: null, size,
      volume_bytes: bytes, object_count: meta.objects.length, stored_bytes: null, display_name: meta.name,
      display_description: meta.description, availability_zone: null, host: null,
      service: CINDER_DRIVER_CLASS[backend.kind], compression: labels[0] ?? 'none',
      chunk_size: meta.objects.reduce((m, o) => Math.max(m, o.length), 0) || null,
      sha_block_size: sha?.blockSize ?? null, source: null, worker: null, created_at: created, data_timestamp: created,
    });
    report.added.push(meta.backupId);
  }
  await repairAbandoned(backend, catalog, containers, new Set(found.keys()), report, signal);
  return report;
}

/**
 * Records a process of this host left behind when it died: a backup it was writing has no
 * `_metadata` (it never committed): its partial objects go and it becomes `error`; a backup it
 * was restoring is `available` again; one it was deleting is `error`, to be deleted again.
 */
async function repairAbandoned(
  backend: Backend, catalog: Catalog, containers: string[], committed: Set<string>, report: RebuildReport, signal?: AbortSignal,
): Promise<void> {
  const scanned = (r: BackupRecord) => backend.nestedContainers || (r.container !== null && containers.includes(r.container));
  for (const rec of await catalog.list({ repository: backend.url })) {
    if (!rec.worker || processAlive(rec.worker) || !scanned(rec)) continue;
    if (rec.status === 'restoring' && (await catalog.update(rec.id, { status: 'available', worker: null }, ['restoring']))) {
      report.repaired.push(`${rec.id}: available again (its restorer ${rec.worker} ended)`);
    } else if (rec.status === 'deleting') {
      // A delete that died part-way: objects may be gone, so the backup is no longer whole.
      const reason = `its delete by ${rec.worker} ended before it was done: delete it again`;
      if (await catalog.update(rec.id, { status: 'error', fail_reason: reason, worker: null }, ['deleting'])) {
        report.repaired.push(`${rec.id}: error (${reason})`);
      }
    } else if (rec.status === 'creating' && !committed.has(rec.id)) {
      const removal = rec.service_metadata ? await removeBackupObjects(backend, locate(rec), [], { signal }) : { deleted: 0, failed: [] };
      const left = removal.failed.length ? `; removing its objects failed ${removal.failed.length} time(s), first: ${removal.failed[0]}` : '';
      const reason = `its writer ${rec.worker} ended before the backup was complete${left}`;
      if (await catalog.update(rec.id, { status: 'error', fail_reason: reason, worker: null }, ['creating'])) {
        report.repaired.push(`${rec.id}: error (${reason})`);
      }
    }
  }
}

/**
 * What a read gives, or undefined when the object is missing or damaged (the record is still
 * made, without what it would tell; restore and verify say what is wrong). A storage fault is
 * not hidden: it fails the import, or makes the backup unreadable for this rebuild.
 */
async function unlessMissingOrDamaged<T>(read: Promise<T>): Promise<T | undefined> {
  try {
    return await read;
  } catch (err) {
    if (err instanceof NotFoundError || err instanceof IntegrityError) return undefined;
    throw err;
  }
}

export async function exportRecord(catalog: Catalog, id: string): Promise<{ backup_service: string; backup_url: string }> {
  const rec = await requireBackup(catalog, id);
  // As Cinder: only a whole backup is exported (an import of any other could not restore).
  if (rec.status !== 'available' && rec.status !== 'restoring') {
    throw new ConflictError(`backup ${id} is ${rec.status}, not available: only an available backup can be exported`, { backupId: id });
  }
  return { backup_service: rec.service ?? CINDER_DRIVER_CLASS.posix, backup_url: encodeRecord(rec) };
}

/** Imports a record made by `cinder backup-export` or `chunkvault export-record`. */
export async function importRecord(backend: Backend, catalog: Catalog, backupUrl: string, signal?: AbortSignal): Promise<BackupRecord> {
  const r = decodeRecord(backupUrl);
  const existing = await catalog.get(r.id);
  if (existing && existing.status !== 'deleted') throw new ConflictError(`backup ${r.id} is already in the catalog`, { backupId: r.id });
  if (existing) await catalog.purge(r.id);
  // The record must point at a backup this repository holds.
  const loc = { id: r.id, container: r.container, prefix: r.service_metadata };
  const meta = await readMetadata(backend, loc, { signal });
  const sha = await unlessMissingOrDamaged(readBlockCount(backend, loc, { signal }));
  // The exact volume length: from the objects for a full backup, with the parent's for an incremental.
  const parentBytes = r.parent_id ? (await catalog.get(r.parent_id))?.volume_bytes ?? null : null;
  const parent = parentBytes === null ? undefined : { bytes: parentBytes };
  let full: number | null = null;
  if (sha && !r.parent_id) full = layerLength(meta, sha, undefined, r.id);
  else if (sha && parent) {
    try {
      full = layerLength(meta, sha, parent, r.id);
    } catch {
      full = null; // restore and verify say what is wrong with the chain
    }
  }
  return catalog.create({
    id: r.id, volume_id: r.volume_id, parent_id: r.parent_id, repository: backend.url, container: r.container,
    service_metadata: r.service_metadata, status: 'available', fail_reason: null, size: r.size, volume_bytes: full,
    object_count: r.object_count, stored_bytes: null, display_name: r.display_name,
    display_description: r.display_description, availability_zone: r.availability_zone, host: r.host,
    service: r.service, compression: null, chunk_size: null, sha_block_size: sha?.blockSize ?? null, source: null,
    worker: null, created_at: r.created_at, data_timestamp: r.data_timestamp,
  });
}
