import * as net from 'node:net';
import pg from 'pg';
import { ConflictError, NotFoundError } from '../errors.js';
import type { BackupFilter, BackupPatch, BackupRecord, BackupStatus, Catalog, NewBackupRecord } from './catalog.js';
import { CATALOG_COLUMNS } from './columns.js';
import { JOBS_TABLE_COLUMNS } from './jobs.js';
import { PostgresJobQueue } from './postgres-jobs.js';

/** Schema versions, applied in order inside one transaction each; `chunkvault_schema` records progress. */
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
     volume_bytes BIGINT,
     object_count INTEGER NOT NULL DEFAULT 0,
     stored_bytes BIGINT,
     display_name TEXT,
     display_description TEXT,
     availability_zone TEXT,
     host TEXT,
     service TEXT,
     compression TEXT,
     chunk_size BIGINT,
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
  `ALTER TABLE backups ADD COLUMN seq BIGSERIAL;
   CREATE TABLE jobs (${JOBS_TABLE_COLUMNS},
     seq BIGSERIAL
   );
   CREATE INDEX jobs_claim ON jobs (status, resource, seq);
   CREATE INDEX jobs_backup ON jobs (backup_id);`,
];

const NUMERIC = new Set(['size', 'volume_bytes', 'object_count', 'stored_bytes', 'chunk_size', 'sha_block_size', 'num_dependent_backups']);

const SELECT = `SELECT ${CATALOG_COLUMNS.map((c) => `b.${c}`).join(', ')}, (SELECT COUNT(*) FROM backups c WHERE c.parent_id = b.id AND c.status <> 'deleted')
  AS num_dependent_backups FROM backups b`;

function toRecord(row: Record<string, unknown>): BackupRecord {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = NUMERIC.has(k) && v !== null ? Number(v) : v;
  return out as unknown as BackupRecord;
}

/** The catalog in PostgreSQL: one database shared by many hosts and workers. */
export class PostgresCatalog implements Catalog {
  readonly jobs: PostgresJobQueue;

  private constructor(private readonly pool: pg.Pool, private readonly sockets: Set<net.Socket>) {
    this.jobs = new PostgresJobQueue(pool);
  }

  static async open(connectionString: string): Promise<PostgresCatalog> {
    // A server that stops answering (frozen, or a network that drops packets) fails calls
    // instead of hanging them: connecting gives up after 10 s, a query after 30 s.
    // The catalog keeps its connections' sockets so that closing it can cut them (see close).
    const sockets = new Set<net.Socket>();
    const stream = () => {
      const socket = new net.Socket();
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      return socket;
    };
    const pool = new pg.Pool({ connectionString, max: 10, connectionTimeoutMillis: 10_000, query_timeout: 30_000, keepAlive: true, stream });
    pool.on('error', () => {}); // an idle client's connection loss surfaces on the next query
    const catalog = new PostgresCatalog(pool, sockets);
    await catalog.migrate();
    return catalog;
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // One migrator at a time, across every process sharing the database.
      await client.query('SELECT pg_advisory_xact_lock(7134652001)');
      await client.query('CREATE TABLE IF NOT EXISTS chunkvault_schema (version INTEGER NOT NULL)');
      const { rows } = await client.query('SELECT COALESCE(MAX(version), 0) AS v FROM chunkvault_schema');
      for (let v = Number(rows[0].v); v < MIGRATIONS.length; v++) {
        await client.query(MIGRATIONS[v]!);
        await client.query('INSERT INTO chunkvault_schema (version) VALUES ($1)', [v + 1]);
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  async create(record: NewBackupRecord): Promise<BackupRecord> {
    const row: Record<string, unknown> = { ...record, updated_at: record.created_at, deleted_at: null };
    const cols = CATALOG_COLUMNS.filter((c) => row[c] !== undefined);
    try {
      await this.pool.query(
        `INSERT INTO backups (${cols.join(',')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(',')})`,
        cols.map((c) => row[c]),
      );
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw new ConflictError(`a backup with id ${record.id} is already in the catalog`, { backupId: record.id });
      }
      throw err;
    }
    return (await this.get(record.id))!;
  }

  async get(id: string): Promise<BackupRecord | undefined> {
    const { rows } = await this.pool.query(`${SELECT} WHERE b.id = $1`, [id]);
    return rows[0] ? toRecord(rows[0]) : undefined;
  }

  async update(id: string, patch: BackupPatch, ifStatus?: BackupStatus[], ifWorker?: string | null): Promise<boolean> {
    const values: Record<string, unknown> = { ...patch, updated_at: patch.updated_at ?? new Date().toISOString() };
    const cols = CATALOG_COLUMNS.filter((c) => c !== 'id' && values[c] !== undefined);
    const params = cols.map((c) => values[c]);
    let sql = `UPDATE backups SET ${cols.map((c, i) => `${c} = $${i + 1}`).join(', ')} WHERE id = $${params.length + 1}`;
    params.push(id);
    if (ifStatus) {
      sql += ` AND status = ANY($${params.length + 1})`;
      params.push(ifStatus);
    }
    if (ifWorker !== undefined) {
      sql += ` AND worker IS NOT DISTINCT FROM $${params.length + 1}`;
      params.push(ifWorker);
    }
    const r = await this.pool.query(sql, params);
    return (r.rowCount ?? 0) > 0;
  }

  async list(filter: BackupFilter = {}): Promise<BackupRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, v: unknown) => (params.push(v), where.push(sql.replace('?', `$${params.length}`)));
    if (filter.volumeId) add('b.volume_id = ?', filter.volumeId);
    if (filter.repository) add('b.repository = ?', filter.repository);
    if (filter.name !== undefined) add('b.display_name = ?', filter.name);
    if (filter.status) add('b.status = ?', filter.status);
    else if (!filter.includeDeleted) where.push(`b.status <> 'deleted'`);
    if (filter.marker !== undefined) {
      const m = await this.pool.query('SELECT created_at, seq FROM backups WHERE id = $1', [filter.marker]);
      if (!m.rows[0]) throw new NotFoundError(`marker ${filter.marker} is not a backup in the catalog`);
      params.push(m.rows[0].created_at, m.rows[0].seq);
      const [c, q] = [`$${params.length - 1}`, `$${params.length}`];
      where.push(`(b.created_at > ${c} OR (b.created_at = ${c} AND b.seq > ${q}))`);
    }
    let sql = `${SELECT}${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY b.created_at, b.seq`;
    if (filter.limit !== undefined) (params.push(filter.limit), (sql += ` LIMIT $${params.length}`));
    const { rows } = await this.pool.query(sql, params);
    return rows.map(toRecord);
  }

  async purge(id: string): Promise<void> {
    await this.pool.query('DELETE FROM backups WHERE id = $1', [id]);
  }

  /**
   * Idle connections say goodbye; whatever is still in flight (a query, a connect) fails at
   * once rather than waiting for a server that may have stopped answering: its connection is
   * cut, and the server rolls back any transaction it had open.
   */
  async close(): Promise<void> {
    const ended = this.pool.end();
    for (const socket of this.sockets) socket.destroy();
    await ended;
  }
}
