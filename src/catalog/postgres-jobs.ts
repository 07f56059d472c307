import type pg from 'pg';
import { CancelledError, ConflictError } from '../errors.js';
import {
  CLAIMABLE_WHERE, JOB_STATS_SQL, LEASE_EXPIRED_ERROR, jobFromRow, statsFromRows, type JobFilter, type JobOutcome,
  type JobProgress, type JobQueue, type JobRecord, type JobStats, type NewJob,
} from './jobs.js';

/** Serialises claims across every worker sharing the database (claims are short and rare). */
const CLAIM_LOCK = 7134652002;

/** The job queue in PostgreSQL, shared by workers on many hosts. */
export class PostgresJobQueue implements JobQueue {
  constructor(private readonly pool: pg.Pool) {}

  async enqueue(job: NewJob): Promise<JobRecord> {
    const now = new Date().toISOString();
    try {
      const { rows } = await this.pool.query(
        `INSERT INTO jobs (id, kind, status, backup_id, resource, params, created_at, updated_at)
         VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6) RETURNING *`,
        [job.id, job.kind, job.backup_id, job.resource, JSON.stringify(job.params), now],
      );
      return jobFromRow(rows[0]);
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new ConflictError(`job ${job.id} exists`);
      throw err;
    }
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const { rows } = await this.pool.query('SELECT * FROM jobs WHERE id = $1', [id]);
    return rows[0] ? jobFromRow(rows[0]) : undefined;
  }

  async list(filter: JobFilter = {}): Promise<JobRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (col: string, v: unknown) => (params.push(v), where.push(`${col} = $${params.length}`));
    if (filter.status) add('status', filter.status);
    if (filter.kind) add('kind', filter.kind);
    if (filter.backupId) add('backup_id', filter.backupId);
    let sql = `SELECT * FROM jobs${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY seq DESC`;
    if (filter.limit !== undefined) (params.push(filter.limit), (sql += ` LIMIT $${params.length}`));
    return (await this.pool.query(sql, params)).rows.map(jobFromRow);
  }

  async latestFor(backupIds: string[]): Promise<Map<string, JobRecord>> {
    if (!backupIds.length) return new Map();
    const { rows } = await this.pool.query(
      'SELECT DISTINCT ON (backup_id) * FROM jobs WHERE backup_id = ANY($1) ORDER BY backup_id, seq DESC', [backupIds]);
    return new Map(rows.map((r) => [r.backup_id as string, jobFromRow(r)]));
  }

  async claim(worker: string, leaseMs: number, signal?: AbortSignal): Promise<JobRecord | undefined> {
    const client = await this.pool.connect();
    // A claim its worker gave up on (it is stopping) does not wait on a server that may have
    // stopped answering: its connection is cut, the statement in flight fails at once, and the
    // server rolls the transaction back. Not once COMMIT is sent: the job may be taken by then,
    // and a job taken by a worker that is gone would fail at the end of its lease.
    const abandoned = () => new CancelledError('claim abandoned: the worker is stopping');
    let cut = false;
    const cutOff = () => {
      cut = true;
      client.release(abandoned());
    };
    if (signal?.aborted) cutOff();
    else signal?.addEventListener('abort', cutOff, { once: true });
    try {
      if (cut) throw abandoned();
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [CLAIM_LOCK]);
      const now = new Date();
      const { rows } = await client.query(
        `UPDATE jobs SET status = 'running', worker = $1, lease_expires_at = $2, attempts = attempts + 1,
           started_at = $3, updated_at = $3
         WHERE id = (SELECT j.id FROM jobs j WHERE ${CLAIMABLE_WHERE} ORDER BY j.seq LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *`,
        [worker, now.getTime() + leaseMs, now.toISOString()],
      );
      signal?.removeEventListener('abort', cutOff);
      if (cut) throw abandoned();
      await client.query('COMMIT');
      return rows[0] ? jobFromRow(rows[0]) : undefined;
    } catch (err) {
      if (cut) throw abandoned();
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      signal?.removeEventListener('abort', cutOff);
      if (!cut) client.release();
    }
  }

  async heartbeat(id: string, worker: string, leaseMs: number, progress?: JobProgress): Promise<{ cancelRequested: boolean } | undefined> {
    const now = Date.now();
    const { rows } = await this.pool.query(
      `UPDATE jobs SET lease_expires_at = $1, progress = COALESCE($2, progress), updated_at = $3
       WHERE id = $4 AND worker = $5 AND status = 'running' RETURNING cancel_requested`,
      [now + leaseMs, progress ? JSON.stringify(progress) : null, new Date(now).toISOString(), id, worker],
    );
    return rows[0] ? { cancelRequested: Boolean(rows[0].cancel_requested) } : undefined;
  }

  async finish(id: string, worker: string, status: 'succeeded' | 'failed' | 'cancelled', o: JobOutcome): Promise<boolean> {
    const now = new Date().toISOString();
    const r = await this.pool.query(
      `UPDATE jobs SET status = $1, result = $2, error = $3, bytes = $4, seconds = $5, retries = $6,
         lease_expires_at = NULL, finished_at = $7, updated_at = $7
       WHERE id = $8 AND worker = $9 AND status = 'running'`,
      [status, o.result ? JSON.stringify(o.result) : null, o.error ?? null, o.bytes ?? null, o.seconds ?? null,
        o.retries ?? null, now, id, worker],
    );
    return (r.rowCount ?? 0) > 0;
  }

  async cancel(id: string): Promise<JobRecord | undefined> {
    const now = new Date().toISOString();
    const { rows } = await this.pool.query(
      `UPDATE jobs SET cancel_requested = 1, updated_at = $1,
         status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
         finished_at = CASE WHEN status = 'queued' THEN $1 ELSE finished_at END,
         error = CASE WHEN status = 'queued' THEN 'cancelled before it started' ELSE error END
       WHERE id = $2 AND status IN ('queued', 'running') RETURNING *`,
      [now, id],
    );
    return rows[0] ? jobFromRow(rows[0]) : undefined;
  }

  async reapExpired(now = Date.now()): Promise<JobRecord[]> {
    const at = new Date(now).toISOString();
    const { rows } = await this.pool.query(
      `UPDATE jobs SET status = 'failed', error = $1 || ' (worker ' || worker || ')', lease_expires_at = NULL,
         finished_at = $2, updated_at = $2
       WHERE status = 'running' AND lease_expires_at < $3 RETURNING *`,
      [LEASE_EXPIRED_ERROR, at, now],
    );
    return rows.map(jobFromRow);
  }

  async stats(): Promise<JobStats[]> {
    return statsFromRows((await this.pool.query(JOB_STATS_SQL)).rows);
  }
}
