import Database from 'better-sqlite3';
import { existsSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { ConflictError, NotFoundError } from '../errors.js';
import { CATALOG_COLUMNS } from './columns.js';
import { JOBS_TABLE_COLUMNS } from './jobs.js';
import { SqliteJobQueue } from './sqlite-jobs.js';
import type { BackupFilter, BackupPatch, BackupRecord, BackupStatus, Catalog, NewBackupRecord } from './catalog.js';

const COLUMNS = CATALOG_COLUMNS;

/** Schema versions, applied in order; `PRAGMA user_version` records how far a file is. */
const MIGRATIONS = [
  `CREATE TABLE backups (
     id TEXT PRIMARY KEY,
     volume_id TEXT NOT NULL,
     parent_id TEXT,
     repository TEXT NOT NULL,
     container TEXT,
     service_metadata TEXT,
     status TEXT NOT NULL,
     fail_reason TEXT,
     size INTEGER NOT NULL DEFAULT 0,
     volume_bytes INTEGER,
     object_count INTEGER NOT NULL DEFAULT 0,
     stored_bytes INTEGER,
     display_name TEXT,
     display_description TEXT,
     availability_zone TEXT,
     host TEXT,
     service TEXT,
     compression TEXT,
     chunk_size INTEGER,
     sha_block_size INTEGER,
     source TEXT,
     worker TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT,
     deleted_at TEXT,
     data_timestamp TEXT
   );
   CREATE INDEX backups_volume ON backups (volume_id, created_at);
   CREATE INDEX backups_parent ON backups (parent_id);`,
  `ALTER TABLE backups ADD COLUMN seq INTEGER;
   UPDATE backups SET seq = rowid;
   CREATE TABLE jobs (${JOBS_TABLE_COLUMNS},
     seq INTEGER NOT NULL
   );
   CREATE INDEX jobs_claim ON jobs (status, resource, seq);
   CREATE INDEX jobs_backup ON jobs (backup_id);`,
];

const SELECT = `SELECT ${CATALOG_COLUMNS.map((c) => `b.${c}`).join(', ')}, (SELECT COUNT(*) FROM backups c WHERE c.parent_id = b.id AND c.status <> 'deleted')
  AS num_dependent_backups FROM backups b`;

/** The embedded catalog: one SQLite file, WAL mode, safe for several processes on one host. */
export class SqliteCatalog implements Catalog {
  private readonly db: Database.Database;
  readonly jobs: SqliteJobQueue;

  /** `createDirectory`: make the file's directory if it is missing (the embedded default's). */
  constructor(readonly file: string, createDirectory = true) {
    if (file !== ':memory:') {
      const dir = path.dirname(path.resolve(file));
      if (createDirectory) mkdirSync(dir, { recursive: true });
      else if (!existsSync(dir)) throw Object.assign(new Error(`directory ${dir} does not exist`), { code: 'ENOENT' });
    }
    this.db = new Database(file);
    this.db.pragma('busy_timeout = 10000'); // first: several processes may create the file at once
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.migrate();
    this.jobs = new SqliteJobQueue(this.db);
  }

  private migrate(): void {
    const version = () => this.db.pragma('user_version', { simple: true }) as number;
    if (version() >= MIGRATIONS.length) return;
    // Read again under the write lock: another process may have migrated meanwhile.
    this.db.transaction(() => {
      for (let v = version(); v < MIGRATIONS.length; v++) {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      }
    }).immediate();
  }

  async create(record: NewBackupRecord): Promise<BackupRecord> {
    const row: Record<string, unknown> = { ...record, updated_at: record.created_at, deleted_at: null };
    const cols = COLUMNS.filter((c) => row[c] !== undefined);
    try {
      this.db.prepare(
        `INSERT INTO backups (${cols.join(',')}, seq) VALUES (${cols.map((c) => '@' + c).join(',')}, ` +
          '(SELECT COALESCE(MAX(seq), 0) + 1 FROM backups))',
      ).run(
        Object.fromEntries(cols.map((c) => [c, row[c]])),
      );
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new ConflictError(`a backup with id ${record.id} is already in the catalog`, { backupId: record.id });
      }
      throw err;
    }
    return (await this.get(record.id))!;
  }

  async get(id: string): Promise<BackupRecord | undefined> {
    return this.db.prepare(`${SELECT} WHERE b.id = ?`).get(id) as BackupRecord | undefined;
  }

  async update(id: string, patch: BackupPatch, ifStatus?: BackupStatus[], ifWorker?: string | null): Promise<boolean> {
    const values: Record<string, unknown> = { ...patch, updated_at: patch.updated_at ?? new Date().toISOString() };
    const cols = COLUMNS.filter((c) => c !== 'id' && values[c] !== undefined);
    let sql = `UPDATE backups SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE id = @__id`;
    const params: Record<string, unknown> = { ...Object.fromEntries(cols.map((c) => [c, values[c]])), __id: id };
    if (ifStatus) {
      sql += ` AND status IN (${ifStatus.map((_, i) => `@__s${i}`).join(',')})`;
      ifStatus.forEach((s, i) => (params[`__s${i}`] = s));
    }
    if (ifWorker !== undefined) (sql += ' AND worker IS @__w', (params.__w = ifWorker));
    return this.db.prepare(sql).run(params).changes > 0;
  }

  async list(filter: BackupFilter = {}): Promise<BackupRecord[]> {
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (filter.volumeId) (where.push('b.volume_id = @volumeId'), (params.volumeId = filter.volumeId));
    if (filter.repository) (where.push('b.repository = @repository'), (params.repository = filter.repository));
    if (filter.name !== undefined) (where.push('b.display_name = @name'), (params.name = filter.name));
    if (filter.status) (where.push('b.status = @status'), (params.status = filter.status));
    else if (!filter.includeDeleted) where.push(`b.status <> 'deleted'`);
    if (filter.marker !== undefined) {
      const m = this.db.prepare('SELECT created_at, seq FROM backups WHERE id = ?').get(filter.marker) as
        { created_at: string; seq: number } | undefined;
      if (!m) throw new NotFoundError(`marker ${filter.marker} is not a backup in the catalog`);
      where.push('(b.created_at > @mc OR (b.created_at = @mc AND b.seq > @ms))');
      Object.assign(params, { mc: m.created_at, ms: m.seq });
    }
    let sql = `${SELECT}${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY b.created_at, b.seq`;
    if (filter.limit !== undefined) (sql += ' LIMIT @limit'), (params.limit = filter.limit);
    return this.db.prepare(sql).all(params) as BackupRecord[];
  }

  async purge(id: string): Promise<void> {
    this.db.prepare('DELETE FROM backups WHERE id = ?').run(id);
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
