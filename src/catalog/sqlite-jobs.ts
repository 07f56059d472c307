import type Database from 'better-sqlite3';
import { ConflictError } from '../errors.js';
import {
  CLAIMABLE_WHERE, JOB_STATS_SQL, LEASE_EXPIRED_ERROR, jobFromRow, statsFromRows, type JobFilter, type JobOutcome,
  type JobProgress, type JobQueue, type JobRecord, type JobStats, type NewJob,
} from './jobs.js';

type Row = Record<string, unknown>;

/** The job queue in the embedded SQLite catalog: one writer at a time makes every step atomic. */
export class SqliteJobQueue implements JobQueue {
  constructor(private readonly db: Database.Database) {}

  async enqueue(job: NewJob): Promise<JobRecord> {
    const now = new Date().toISOString();
    try {
      this.db.prepare(
        `INSERT INTO jobs (id, kind, status, backup_id, resource, params, created_at, updated_at, seq)
         VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs))`,
      ).run(job.id, job.kind, job.backup_id, job.resource, JSON.stringify(job.params), now, now);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new ConflictError(`job ${job.id} exists`);
      throw err;
    }
    return (await this.get(job.id))!;
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const row = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row ? jobFromRow(row) : undefined;
  }

  async list(filter: JobFilter = {}): Promise<JobRecord[]> {
    const where: string[] = [];
    const params: Row = {};
    if (filter.status) (where.push('status = @status'), (params.status = filter.status));
    if (filter.kind) (where.push('kind = @kind'), (params.kind = filter.kind));
    if (filter.backupId) (where.push('backup_id = @backupId'), (params.backupId = filter.backupId));
    let sql = `SELECT * FROM jobs${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY seq DESC`;
    if (filter.limit !== undefined) (sql += ' LIMIT @limit'), (params.limit = filter.limit);
    return (this.db.prepare(sql).all(params) as Row[]).map(jobFromRow);
  }

  async latestFor(backupIds: string[]): Promise<Map<string, JobRecord>> {
    if (!backupIds.length) return new Map();
    const rows = this.db.prepare(
      `SELECT * FROM jobs WHERE seq IN (SELECT MAX(seq) FROM jobs WHERE backup_id IN (${backupIds.map(() => '?').join(',')}) GROUP BY backup_id)`,
    ).all(...backupIds) as Row[];
    return new Map(rows.map((r) => [r.backup_id as string, jobFromRow(r)]));
  }

  async claim(worker: string, leaseMs: number): Promise<JobRecord | undefined> {
    const now = new Date();
    const row = this.db.transaction(() =>
      this.db.prepare(
        `UPDATE jobs SET status = 'running', worker = ?, lease_expires_at = ?, attempts = attempts + 1,
           started_at = ?, updated_at = ?
         WHERE id = (SELECT j.id FROM jobs j WHERE ${CLAIMABLE_WHERE} ORDER BY j.seq LIMIT 1)
         RETURNING *`,
      ).get(worker, now.getTime() + leaseMs, now.toISOString(), now.toISOString()) as Row | undefined,
    ).immediate();
    return row ? jobFromRow(row) : undefined;
  }

  async heartbeat(id: string, worker: string, leaseMs: number, progress?: JobProgress): Promise<{ cancelRequested: boolean } | undefined> {
    const now = Date.now();
    const row = this.db.prepare(
      `UPDATE jobs SET lease_expires_at = ?, progress = COALESCE(?, progress), updated_at = ?
       WHERE id = ? AND worker = ? AND status = 'running' RETURNING cancel_requested`,
    ).get(now + leaseMs, progress ? JSON.stringify(progress) : null, new Date(now).toISOString(), id, worker) as Row | undefined;
    return row ? { cancelRequested: Boolean(row.cancel_requested) } : undefined;
  }

  async finish(id: string, worker: string, status: 'succeeded' | 'failed' | 'cancelled', o: JobOutcome): Promise<boolean> {
    const now = new Date().toISOString();
    return this.db.prepare(
      `UPDATE jobs SET status = ?, result = ?, error = ?, bytes = ?, seconds = ?, retries = ?, lease_expires_at = NULL,
         finished_at = ?, updated_at = ?
       WHERE id = ? AND worker = ? AND status = 'running'`,
    ).run(status, o.result ? JSON.stringify(o.result) : null, o.error ?? null, o.bytes ?? null, o.seconds ?? null,
      o.retries ?? null, now, now, id, worker).changes > 0;
  }

  async cancel(id: string): Promise<JobRecord | undefined> {
    const now = new Date().toISOString();
    const row = this.db.prepare(
      `UPDATE jobs SET cancel_requested = 1, updated_at = ?,
         status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
         finished_at = CASE WHEN status = 'queued' THEN ? ELSE finished_at END,
         error = CASE WHEN status = 'queued' THEN 'cancelled before it started' ELSE error END
       WHERE id = ? AND status IN ('queued', 'running') RETURNING *`,
    ).get(now, now, id) as Row | undefined;
    return row ? jobFromRow(row) : undefined;
  }

  async reapExpired(now = Date.now()): Promise<JobRecord[]> {
    const at = new Date(now).toISOString();
    const rows = this.db.prepare(
      `UPDATE jobs SET status = 'failed', error = ? || ' (worker ' || worker || ')', lease_expires_at = NULL,
         finished_at = ?, updated_at = ?
       WHERE status = 'running' AND lease_expires_at < ? RETURNING *`,
    ).all(LEASE_EXPIRED_ERROR, at, at, now) as Row[];
    return rows.map(jobFromRow);
  }

  async stats(): Promise<JobStats[]> {
    return statsFromRows(this.db.prepare(JOB_STATS_SQL).all() as Row[]);
  }
}
