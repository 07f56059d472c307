// Load test of `chunkvault serve` on loopback: API latency percentiles under concurrent
// clients, then job throughput of a burst of backups run by two worker processes.
// Bounded in count and time. Usage: node bench/service-load.mjs <work dir>  (prints JSON)
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WORK = path.resolve(process.argv[2] ?? '/var/tmp/chunkvault-bench/service');
const REQUESTS = Number(process.env.LOAD_REQUESTS ?? 4000);
const CLIENTS = Number(process.env.LOAD_CLIENTS ?? 16);
const SECONDS = Number(process.env.LOAD_SECONDS ?? 60);
const JOBS = Number(process.env.LOAD_JOBS ?? 40);
const JOB_MIB = Number(process.env.LOAD_JOB_MIB ?? 16);
const WORKERS = Number(process.env.LOAD_WORKERS ?? 2);

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const summary = (ms) => {
  const s = [...ms].sort((a, b) => a - b);
  return { count: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: s.at(-1) };
};

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

async function database() {
  execFileSync('bash', [path.join(ROOT, 'scripts/pg-local.sh'), 'start'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const base = /DATABASE_URL=(\S+)/.exec(execFileSync('bash', [path.join(ROOT, 'scripts/pg-local.sh'), 'env'], { encoding: 'utf8' }))[1];
  const { default: pg } = await import('pg');
  const name = `cvload_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

async function main() {
  rmSync(WORK, { recursive: true, force: true });
  const vols = path.join(WORK, 'vols');
  mkdirSync(vols, { recursive: true });
  const token = randomBytes(16).toString('hex');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const catalog = await database();
  const env = {
    ...process.env, CHUNKVAULT_API_TOKENS: `load:admin:${token}`, CHUNKVAULT_VOLUMES: `${vols}/**`,
    CHUNKVAULT_REPO: path.join(WORK, 'repo'), CHUNKVAULT_CATALOG: catalog, CHUNKVAULT_LOG_LEVEL: 'warn',
  };
  const svc = spawn(process.execPath, [path.join(ROOT, 'dist/src/cli/main.js'), 'serve', '--listen', `127.0.0.1:${port}`,
    '--workers', String(WORKERS)], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const call = async (method, route, body) => {
    const res = await fetch(url + route, { method, headers, body: body && JSON.stringify(body) });
    const json = await res.json();
    return { status: res.status, json };
  };
  try {
    for (let i = 0; ; i++) {
      if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) break;
      if (i > 300) throw new Error('service did not start');
      await sleep(100);
    }
    // Volumes: 8 of JOB_MIB each, random data (compression cannot hide the work).
    const volumes = Array.from({ length: 8 }, (_, i) => {
      const f = path.join(vols, `v${i}.img`);
      writeFileSync(f, randomBytes(JOB_MIB * 1024 * 1024));
      return f;
    });
    const seed = await call('POST', '/v1/backups', { volume: volumes[0], volume_id: 'load-seed' });
    const seedId = seed.json.backup.id;

    // Phase 1: API latency. Mostly reads, some writes (queued backups of a tiny volume).
    const tiny = path.join(vols, 'tiny.img');
    writeFileSync(tiny, randomBytes(64 * 1024));
    const lat = { list: [], get: [], jobs: [], create: [] };
    let sent = 0;
    let errors = 0;
    const deadline = Date.now() + SECONDS * 1000;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CLIENTS }, async () => {
      while (sent < REQUESTS && Date.now() < deadline) {
        const n = sent++;
        const kind = n % 20 === 0 ? 'create' : ['list', 'get', 'jobs'][n % 3];
        const start = performance.now();
        const r = kind === 'list' ? await call('GET', '/v1/backups?limit=50')
          : kind === 'get' ? await call('GET', `/v1/backups/${seedId}`)
          : kind === 'jobs' ? await call('GET', '/v1/jobs?limit=20')
          : await call('POST', '/v1/backups', { volume: tiny, volume_id: `load-tiny-${n % 4}` });
        lat[kind].push(performance.now() - start);
        if (r.status >= 400) errors++;
      }
    }));
    const apiSeconds = (performance.now() - t0) / 1000;
    const all = Object.values(lat).flat();

    // Phase 2: a burst of backup jobs, full then incremental per volume, all queued at once.
    const idle = async () => {
      for (;;) {
        const q = await call('GET', '/v1/jobs?status=queued&limit=1');
        const r = await call('GET', '/v1/jobs?status=running&limit=1');
        if (!q.json.jobs.length && !r.json.jobs.length) return;
        await sleep(200);
      }
    };
    await idle();
    const b0 = performance.now();
    const ids = [];
    for (let i = 0; i < JOBS; i++) {
      const v = i % volumes.length;
      const r = await call('POST', '/v1/backups', { volume: volumes[v], volume_id: `load-vol-${v}`, incremental: i >= volumes.length });
      if (r.status !== 202) throw new Error(`submit failed: ${JSON.stringify(r.json)}`);
      ids.push(r.json.backup.id);
    }
    await idle();
    const burstSeconds = (performance.now() - b0) / 1000;
    const jobs = (await call('GET', `/v1/jobs?kind=backup&limit=1000`)).json.jobs.filter((j) => ids.includes(j.backup_id));
    const failed = jobs.filter((j) => j.status !== 'succeeded');
    const waits = jobs.map((j) => Date.parse(j.started_at) - Date.parse(j.created_at));
    const durations = jobs.map((j) => Date.parse(j.finished_at) - Date.parse(j.started_at));
    const bytes = JOBS * JOB_MIB * 1024 * 1024;
    return {
      api: {
        clients: CLIENTS, requests: all.length, seconds: apiSeconds, requests_per_second: all.length / apiSeconds, errors,
        latency_ms: summary(all), by_route_ms: Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, summary(v)])),
      },
      jobs: {
        workers: WORKERS, count: JOBS, failed: failed.length, volume_mib: JOB_MIB, seconds: burstSeconds,
        jobs_per_second: JOBS / burstSeconds, mb_per_second: bytes / 1e6 / burstSeconds,
        queue_wait_ms: summary(waits), run_ms: summary(durations),
      },
    };
  } finally {
    svc.kill('SIGTERM');
    await new Promise((r) => svc.once('exit', r));
  }
}

main().then((r) => console.log(JSON.stringify(r, null, 2)), (err) => {
  console.error(`service load test failed: ${err.message}`);
  process.exit(1);
});
