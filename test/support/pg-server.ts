/** The real PostgreSQL the catalog tests run against: started by scripts/pg-local.sh, once per process. */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
let url: string | undefined;

export function pgServer(): string {
  if (url) return url;
  execFileSync('bash', [path.join(ROOT, 'scripts/pg-local.sh'), 'start'], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
  const env = execFileSync('bash', [path.join(ROOT, 'scripts/pg-local.sh'), 'env'], { encoding: 'utf8' });
  url = /DATABASE_URL=(\S+)/.exec(env)![1]!;
  return url;
}

/** A fresh, empty database on the test server; its URL. */
export async function freshDatabase(): Promise<string> {
  const base = pgServer();
  const name = `cvt_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Drops a database under whoever still uses it (a catalog losing its database). */
export async function dropDatabase(url: string): Promise<void> {
  const admin = new pg.Client({ connectionString: pgServer() });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE ${new URL(url).pathname.slice(1)} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}
