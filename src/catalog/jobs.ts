/**
 * The job queue seam: service requests (backup, restore, delete) are rows in the catalog.
 * Workers claim them one at a time under a lease they must keep renewing; a job whose lease
 * runs out is reaped by whoever notices first. Jobs on one resource (a volume, a backup) run
 * one after another, in the order they were queued.
 */
export const JOB_KINDS = ['backup', 'restore', 'delete'] as const;
export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobKind = (typeof JOB_KINDS)[number];
export type JobStatus = (typeof JOB_STATUSES)[number];

export interface JobProgress {
  bytes_done: number;
  bytes_total: number | null;
  percent: number | null;
  bytes_per_second: number;
}

export interface JobRecord {
  id: string;
  kind: JobKind;
  status: JobStatus;
  backup_id: string;
  /** Jobs with the same resource never run at the same time. */
  resource: string;
  params: Record<string, unknown>;
  result: Record<string, unknown> | null;
  progress: JobProgress | null;
  error: string | null;
  /** The worker ("host:pid/n") holding the job while it runs. */
  worker: string | null;
  /** Epoch milliseconds after which a running job counts as abandoned. */
  lease_expires_at: number | null;
  attempts: number;
  cancel_requested: boolean;
  /** Outcome figures of a finished job (metrics): bytes moved, seconds taken, storage retries. */
  bytes: number | null;
  seconds: number | null;
  retries: number | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
}

export interface NewJob {
  id: string;
  kind: JobKind;
  backup_id: string;
  resource: string;
  params: Record<string, unknown>;
}

export interface JobFilter {
  status?: JobStatus;
  kind?: JobKind;
  backupId?: string;
  /** At most this many, newest first. */
  limit?: number;
}

export interface JobOutcome {
  result?: Record<string, unknown>;
  error?: string;
  bytes?: number;
  seconds?: number;
  retries?: number;
}

/** Per kind and status: how many jobs, and the totals of their outcome figures. */
export interface JobStats {
  kind: JobKind;
  status: JobStatus;
  count: number;
  bytes: number;
  seconds: number;
  retries: number;
  /** Jobs with a recorded duration. */
  timed: number;
  /** Jobs with a recorded duration <= each of JOB_SECONDS_BUCKETS (cumulative). */
  buckets: number[];
}

export const JOB_SECONDS_BUCKETS = [1, 5, 15, 60, 300, 1800, 7200];

export interface JobQueue {
  enqueue(job: NewJob): Promise<JobRecord>;
  get(id: string): Promise<JobRecord | undefined>;
  list(filter?: JobFilter): Promise<JobRecord[]>;
  /** The newest job of each of these backups (backups without jobs are absent). */
  latestFor(backupIds: string[]): Promise<Map<string, JobRecord>>;
  /**
   * Takes the oldest queued job whose resource has neither a running job nor an older queued
   * one, marks it running for `worker` with a lease of `leaseMs`. Safe between processes.
   * Once `signal` aborts, a claim not yet being committed is abandoned (CancelledError).
   */
  claim(worker: string, leaseMs: number, signal?: AbortSignal): Promise<JobRecord | undefined>;
  /**
   * Renews the lease (and records progress). Undefined when `worker` no longer holds the
   * job (it was reaped); otherwise whether a cancel was requested.
   */
  heartbeat(id: string, worker: string, leaseMs: number, progress?: JobProgress): Promise<{ cancelRequested: boolean } | undefined>;
  /** Ends a running job held by `worker`; false when it no longer holds it. */
  finish(id: string, worker: string, status: 'succeeded' | 'failed' | 'cancelled', outcome: JobOutcome): Promise<boolean>;
  /** A queued job ends `cancelled` at once; a running one is asked to stop. Undefined if it had ended. */
  cancel(id: string): Promise<JobRecord | undefined>;
  /** Marks failed every running job whose lease ended before `now`, and returns them. */
  reapExpired(now?: number): Promise<JobRecord[]>;
  stats(): Promise<JobStats[]>;
}

/** The SQL of JobQueue.stats, identical in both dialects. */
export const JOB_STATS_SQL = `SELECT kind, status, COUNT(*) AS count, COUNT(seconds) AS timed, COALESCE(SUM(bytes), 0) AS bytes,
  COALESCE(SUM(seconds), 0) AS seconds, COALESCE(SUM(retries), 0) AS retries,
  ${JOB_SECONDS_BUCKETS.map((b, i) => `SUM(CASE WHEN seconds <= ${b} THEN 1 ELSE 0 END) AS b${i}`).join(', ')}
  FROM jobs GROUP BY kind, status`;

export function statsFromRows(rows: Record<string, unknown>[]): JobStats[] {
  return rows.map((r) => ({
    kind: r.kind as JobKind,
    status: r.status as JobStatus,
    count: Number(r.count),
    bytes: Number(r.bytes),
    seconds: Number(r.seconds),
    retries: Number(r.retries),
    timed: Number(r.timed),
    buckets: JOB_SECONDS_BUCKETS.map((_, i) => Number(r[`b${i}`] ?? 0)),
  }));
}

/** A stored row as a JobRecord (JSON columns parsed, numbers and flags normalised). */
export function jobFromRow(row: Record<string, unknown>): JobRecord {
  const json = (v: unknown) => (v === null || v === undefined ? null : typeof v === 'string' ? JSON.parse(v) : v);
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  return {
    id: row.id as string,
    kind: row.kind as JobKind,
    status: row.status as JobStatus,
    backup_id: row.backup_id as string,
    resource: row.resource as string,
    params: json(row.params) ?? {},
    result: json(row.result),
    progress: json(row.progress),
    error: (row.error as string | null) ?? null,
    worker: (row.worker as string | null) ?? null,
    lease_expires_at: num(row.lease_expires_at),
    attempts: Number(row.attempts),
    cancel_requested: Boolean(Number(row.cancel_requested)),
    bytes: num(row.bytes),
    seconds: num(row.seconds),
    retries: num(row.retries),
    created_at: row.created_at as string,
    started_at: (row.started_at as string | null) ?? null,
    finished_at: (row.finished_at as string | null) ?? null,
    updated_at: row.updated_at as string,
  };
}

export const JOBS_TABLE_COLUMNS = `
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL,
     status TEXT NOT NULL,
     backup_id TEXT NOT NULL,
     resource TEXT NOT NULL,
     params TEXT NOT NULL,
     result TEXT,
     progress TEXT,
     error TEXT,
     worker TEXT,
     lease_expires_at BIGINT,
     attempts INTEGER NOT NULL DEFAULT 0,
     cancel_requested INTEGER NOT NULL DEFAULT 0,
     bytes BIGINT,
     seconds DOUBLE PRECISION,
     retries INTEGER,
     created_at TEXT NOT NULL,
     started_at TEXT,
     finished_at TEXT,
     updated_at TEXT NOT NULL`;

/** The claimable job: queued, nothing running on its resource, nothing queued before it there. */
export const CLAIMABLE_WHERE = `j.status = 'queued'
  AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.resource = j.resource AND r.status = 'running')
  AND NOT EXISTS (SELECT 1 FROM jobs q WHERE q.resource = j.resource AND q.status = 'queued' AND q.seq < j.seq)`;

export const LEASE_EXPIRED_ERROR = `lease expired: the worker stopped renewing it (it died or lost the catalog)`;
