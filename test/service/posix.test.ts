/** The service on the embedded posix repository with a real PostgreSQL catalog and two worker processes. */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants as fsc, existsSync, mkdirSync, openSync, promises as fsp, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { openBackend } from '../../src/backends/open.js';
import type { Backend } from '../../src/backends/backend.js';
import type { Catalog } from '../../src/catalog/catalog.js';
import { openCatalog } from '../../src/catalog/open.js';
import { scratch } from '../support/cinder-fixtures.js';
import { pseudoRandom } from '../support/engine-helpers.js';
import { dropDatabase, freshDatabase } from '../support/pg-server.js';
import { startService, startThrottleProxy, type RunningService } from '../support/service.js';
import { hasOpen, waitFor } from '../support/wait.js';
import { MiB, fifoVolume, fleetScenario, objectsUnder } from './scenarios.js';

const tmp = scratch('service-posix');
after(() => tmp.cleanup());

describe('service: posix repository, PostgreSQL catalog, two workers', () => {
  let svc: RunningService;
  let catalog: Catalog;
  let backend: Backend;
  const dir = tmp.dir;
  const vols = path.join(dir, 'vols');
  const repo = path.join(dir, 'repo');

  before(async () => {
    mkdirSync(vols, { recursive: true });
    const db = await freshDatabase();
    svc = await startService({ repo, catalog: db, volumes: [`${vols}/**`], workers: 2, leaseSeconds: 3 });
    catalog = await openCatalog(db);
    backend = await openBackend(repo);
  });
  after(async () => {
    await svc?.stop();
    await catalog?.close();
    await backend?.close();
  });

  it('runs 20 concurrent backup jobs across 5 volumes, then restores each byte for byte', async () => {
    await fleetScenario(svc, dir, 'posix');
  });

  it('a worker killed mid-backup: its job fails after the lease, its objects go, the volume backs up again', async () => {
    const fifo = await fifoVolume(vols, 'killed.img');
    const res = await svc.request('POST', '/v1/backups', { volume: fifo.path, volume_id: 'vol-killed', chunk_size: 256 * 1024 });
    assert.equal(res.status, 202);
    const id = res.body.backup.id as string;
    const writer = await fifo.open; // the worker has opened the volume
    await writer.write(pseudoRandom(2 * MiB, 5));
    const running = await svc.until(`/v1/backups/${id}`, (b) => b.backup.progress?.bytes_done >= MiB);
    const job = (await svc.request('GET', `/v1/jobs/${running.backup.job_id}`)).body.job;
    assert.equal(job.status, 'running');
    assert.ok((await objectsUnder(backend, catalog, id)).length > 0, 'data objects were written before the kill');
    process.kill(Number(job.worker.split(':').at(-1)), 'SIGKILL');
    await writer.close();

    const failed = await svc.until(`/v1/jobs/${job.id}`, (b) => b.job.status !== 'running', 60_000);
    assert.equal(failed.job.status, 'failed');
    assert.match(failed.job.error, /lease expired/);
    // The job is reaped first; the reaper then removes what it wrote and marks the backup.
    const rec = (await svc.until(`/v1/backups/${id}`, (b) => b.backup.status !== 'creating', 30_000)).backup;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason, /lease expired.*partial object\(s\) removed/);
    assert.deepEqual(await objectsUnder(backend, catalog, id), [], 'no partial backup is left in the repository');

    // The service replaced the dead worker, and the volume backs up (fully, then incrementally) again.
    const file = path.join(vols, 'killed-again.img');
    writeFileSync(file, pseudoRandom(MiB, 6));
    const full = (await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-killed' })).body.backup.id;
    const incr = (await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-killed', incremental: true })).body.backup.id;
    const last = await svc.until(`/v1/backups/${incr}`, (b) => b.backup.status !== 'creating', 60_000);
    assert.equal(last.backup.status, 'available', last.backup.fail_reason);
    assert.equal(last.backup.parent_id, full, 'the failed backup is never a parent');
    assert.match(svc.logs(), /worker process died; starting another/);
  });

  it('DELETE of a running backup cancels it and removes what it wrote', async () => {
    const fifo = await fifoVolume(vols, 'cancelled.img');
    const id = (await svc.request('POST', '/v1/backups', { volume: fifo.path, volume_id: 'vol-cancel', chunk_size: 256 * 1024 })).body.backup.id;
    const writer = await fifo.open;
    await writer.write(pseudoRandom(MiB, 8));
    const running = await svc.until(`/v1/backups/${id}`, (b) => b.backup.progress?.bytes_done >= 512 * 1024);
    const del = await svc.request('DELETE', `/v1/backups/${id}`);
    assert.equal(del.status, 202);
    assert.equal(del.body.backup.status, 'deleting');
    const job = await svc.until(`/v1/jobs/${running.backup.job_id}`, (b) => b.job.status !== 'running');
    assert.equal(job.job.status, 'cancelled');
    await writer.close().catch(() => {});
    assert.equal((await svc.request('GET', `/v1/backups/${id}`)).status, 404);
    assert.equal((await catalog.get(id))!.status, 'deleted');
    assert.deepEqual(await objectsUnder(backend, catalog, id), []);
  });

  it('a queued backup deleted before it starts never runs', async () => {
    const fifo = await fifoVolume(vols, 'blocker.img');
    const blocker = (await svc.request('POST', '/v1/backups', { volume: fifo.path, volume_id: 'vol-q' })).body.backup.id;
    const writer = await fifo.open;
    const queued = (await svc.request('POST', '/v1/backups', { volume: fifo.path, volume_id: 'vol-q', incremental: true })).body.backup;
    const del = await svc.request('DELETE', `/v1/backups/${queued.id}`);
    assert.equal(del.status, 202);
    assert.equal(del.body.backup.status, 'deleted');
    const job = (await svc.request('GET', `/v1/jobs/${queued.job_id}`)).body.job;
    assert.equal(job.status, 'cancelled');
    assert.equal(job.started_at, null);
    await writer.write(pseudoRandom(300_000, 9));
    await writer.close();
    const b = await svc.until(`/v1/backups/${blocker}`, (x) => x.backup.status !== 'creating');
    assert.equal(b.backup.status, 'available');
    assert.equal(b.backup.volume_bytes, 300_000);
  });

  it('jobs waiting on named pipes stop when cancelled; requests on one backup keep their order', { timeout: 180_000 }, async () => {
    const settled = (job: string) => svc.until(`/v1/jobs/${job}`, (b) => !['queued', 'running'].includes(b.job.status), 20_000);
    const pipe = (name: string) => {
      const p = path.join(vols, name);
      execFileSync('mkfifo', [p]);
      return p;
    };
    const file = path.join(vols, 'kept.img');
    writeFileSync(file, pseudoRandom(3 * MiB, 21));
    const kept = (await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-kept', chunk_size: 256 * 1024 })).body.backup.id;
    await svc.until(`/v1/backups/${kept}`, (b) => b.backup.status === 'available');

    // Two backups of pipes nobody writes to keep both workers busy.
    const blockers: string[] = [];
    for (const i of [1, 2]) {
      const b = (await svc.request('POST', '/v1/backups', { volume: pipe(`nowriter-${i}.img`), volume_id: `vol-nowriter-${i}` })).body.backup;
      await svc.until(`/v1/jobs/${b.job_id}`, (x) => x.job.status === 'running');
      blockers.push(b.job_id);
    }
    // A restore waits in the queue: a delete may not overtake it.
    const restore = (await svc.request('POST', `/v1/backups/${kept}/restore`, { target: path.join(vols, 'kept-out.img') })).body.restore.job_id;
    const refused = await svc.request('DELETE', `/v1/backups/${kept}`);
    assert.equal(refused.status, 409);
    assert.match(refused.body.error.message, new RegExp(`has a queued restore \\(job ${restore}\\)`));
    assert.equal((await svc.request('POST', `/v1/jobs/${restore}/cancel`)).body.job.status, 'cancelled');
    // A delete that waits in the queue and is cancelled leaves the backup as it was.
    const del = await svc.request('DELETE', `/v1/backups/${kept}`);
    assert.equal(del.status, 202);
    assert.equal((await svc.request('POST', `/v1/jobs/${del.body.backup.job_id}/cancel`)).body.job.status, 'cancelled');
    assert.equal((await svc.request('GET', `/v1/backups/${kept}`)).body.backup.status, 'available');
    // Backups blocked on a pipe without a writer stop at a cancel.
    for (const job of blockers) {
      assert.equal((await svc.request('POST', `/v1/jobs/${job}/cancel`)).status, 202);
      assert.equal((await settled(job)).job.status, 'cancelled');
    }

    // A restore into a pipe whose reader stopped reading: an incremental may build on the backup
    // being restored, and a cancel stops the restore.
    const target = pipe('stalled.pipe');
    const reader = openSync(target, fsc.O_RDONLY | fsc.O_NONBLOCK); // opened, never read
    try {
      const stalled = (await svc.request('POST', `/v1/backups/${kept}/restore`, { target })).body.restore.job_id;
      await svc.until(`/v1/backups/${kept}`, (b) => b.backup.status === 'restoring');
      await sleep(500); // the pipe is full: the restore waits for its reader
      const busy = await svc.request('DELETE', `/v1/backups/${kept}`);
      assert.equal(busy.status, 409);
      assert.match(busy.body.error.message, /is being restored \(by [^)]+:\d+\)/);
      const incr = (await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-kept', incremental: true })).body.backup.id;
      const built = await svc.until(`/v1/backups/${incr}`, (b) => b.backup.status !== 'creating');
      assert.equal(built.backup.status, 'available', built.backup.fail_reason);
      assert.equal(built.backup.parent_id, kept);
      assert.equal((await svc.request('POST', `/v1/jobs/${stalled}/cancel`)).status, 202);
      assert.equal((await settled(stalled)).job.status, 'cancelled');
      await svc.until(`/v1/backups/${kept}`, (b) => b.backup.status === 'available');
    } finally {
      closeSync(reader);
    }
  });

  it('a delete takes back a backup that a restorer which died left `restoring`', async () => {
    const file = path.join(vols, 'orphaned-restore.img');
    writeFileSync(file, pseudoRandom(MiB, 23));
    const id = (await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-orphaned-restore' })).body.backup.id;
    await svc.until(`/v1/backups/${id}`, (b) => b.backup.status === 'available');
    const ended = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    await catalog.update(id, { status: 'restoring', worker: `${hostname()}:${ended}` });
    const del = await svc.request('DELETE', `/v1/backups/${id}`);
    assert.equal(del.status, 202, JSON.stringify(del.body));
    await svc.until(`/v1/jobs/${del.body.backup.job_id}`, (b) => b.job.status === 'succeeded');
    assert.equal((await catalog.get(id))!.status, 'deleted');
    assert.deepEqual(await objectsUnder(backend, catalog, id), []);
  });

  it('a backup that failed before it started says why, and can be deleted', async () => {
    const missing = path.join(vols, 'not-there.img');
    const id = (await svc.request('POST', '/v1/backups', { volume: missing, volume_id: 'vol-missing' })).body.backup.id;
    const failed = await svc.until(`/v1/backups/${id}`, (b) => b.backup.status !== 'creating');
    assert.equal(failed.backup.status, 'error');
    assert.match(failed.backup.fail_reason, /cannot open source .*not-there\.img: no such file or device/);
    assert.equal((await svc.request('DELETE', `/v1/backups/${id}`)).status, 202);
    await svc.until(`/v1/jobs?backup_id=${id}&kind=delete`, (b) => b.jobs[0]?.status === 'succeeded');
    assert.equal((await svc.request('GET', `/v1/backups/${id}`)).status, 404);
  });

  it('refuses bad requests with the right status, and nothing changes', async () => {
    const file = path.join(vols, 'base.img');
    writeFileSync(file, pseudoRandom(MiB, 11));
    const parent = (await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-bad' })).body.backup.id;
    const child = (await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-bad', incremental: true })).body.backup.id;
    await svc.until(`/v1/backups/${child}`, (b) => b.backup.status === 'available');
    const outside = path.join(dir, 'outside.img');
    writeFileSync(outside, 'x');
    symlinkSync(outside, path.join(vols, 'link.img'));
    const snapshot = async () => [
      ...(await svc.request('GET', '/v1/backups?limit=1000')).body.backups, ...(await svc.request('GET', '/v1/jobs?limit=1000')).body.jobs,
    ].map((x) => JSON.stringify(x));
    const before = await snapshot();
    const cases: [string, string, unknown, string | null, number, RegExp][] = [
      ['POST', '/v1/backups', { volume: file, colour: 'red' }, svc.admin, 400, /unknown field.*colour/],
      ['POST', '/v1/backups', { volume: 42 }, svc.admin, 400, /'volume'.*expected string/],
      ['POST', '/v1/backups', { volume: file, incremental: 'yes' }, svc.admin, 400, /'incremental'/],
      ['POST', '/v1/backups', { volume: file, compression: 'lz4' }, svc.admin, 400, /'compression'/],
      ['POST', '/v1/backups', {}, svc.admin, 400, /'volume'/],
      ['POST', '/v1/backups', '{"volume": ', svc.admin, 400, /not valid JSON/],
      ['POST', '/v1/backups', { volume: '/etc/passwd' }, svc.admin, 400, /not in the service's allowed volumes/],
      ['POST', '/v1/backups', { volume: `${vols}/../outside.img` }, svc.admin, 400, /absolute, normalised/],
      ['POST', '/v1/backups', { volume: path.join(vols, 'link.img') }, svc.admin, 400, /resolves to .* not in the service's allowed/],
      ['POST', '/v1/backups', { volume: file, volume_id: 'vol-none', incremental: true }, svc.admin, 400, /make a full backup first/],
      ['POST', '/v1/backups', { volume: file, parent_id: 'nope' }, svc.admin, 404, /not in the catalog/],
      ['POST', '/v1/backups', { volume: file, volume_id: 'vol-other', parent_id: parent }, svc.admin, 400, /is a backup of volume vol-bad, not vol-other/],
      ['POST', '/v1/backups', { volume: file, volume_id: '../up' }, svc.admin, 400, /'volume_id'.*starting with a letter or digit/],
      ['POST', `/v1/backups/${parent}/restore`, { target: '/tmp/evil.img' }, svc.admin, 400, /not in the service's allowed/],
      ['POST', `/v1/backups/${parent}/restore`, { target: path.join(vols, 'r.img'), extra: 1 }, svc.admin, 400, /unknown field/],
      ['POST', '/v1/backups/nope/restore', { target: path.join(vols, 'r.img') }, svc.admin, 404, /not in the catalog/],
      ['DELETE', `/v1/backups/${parent}`, undefined, svc.admin, 409, new RegExp(`1 dependent incremental backup: ${child} \\(available\\); delete it first`)],
      ['GET', '/v1/backups/nope', undefined, svc.admin, 404, /not in the catalog/],
      ['GET', '/v1/backups?limit=0', undefined, svc.admin, 400, /'limit'/],
      ['GET', '/v1/backups?limit=0x10', undefined, svc.admin, 400, /'limit': expected a whole number from 1 to 1000/],
      ['GET', '/v1/backups?limit=1e2', undefined, svc.admin, 400, /'limit'/],
      ['GET', '/v1/backups/%00', undefined, svc.admin, 400, /path: text must not contain NUL characters/],
      ['GET', '/v1/backups?name=a%00b', undefined, svc.admin, 400, /query parameter 'name': text must not contain NUL/],
      ['POST', '/v1/backups', { volume: file, name: 'a\u0000b' }, svc.admin, 400, /request body 'name': text must not contain NUL/],
      ['GET', '/v1/backups/%E0%A4%A', undefined, svc.admin, 400, /path: '%E0%A4%A' is not valid percent-encoding/],
      ['GET', '/v1/jobs/%ZZ', undefined, svc.admin, 400, /not valid percent-encoding/],
      ['GET', '/v1/backups?name=%zz', undefined, svc.admin, 400, /query: 'name=%zz' is not valid percent-encoding/],
      ['GET', '/v1/backups?name=%FF', undefined, svc.admin, 400, /query: 'name=%FF' is not valid percent-encoding/],
      ['POST', '/v1/backups', { volume: file, name: 'a\ud800b' }, svc.admin, 400, /request body 'name': text must be well-formed Unicode/],
      ['POST', '/v1/backups', { volume: JSON.parse('['.repeat(3000) + ']'.repeat(3000)) }, svc.admin, 400, /request body 'volume'(\[0\])+: nested deeper than 32 levels/],
      ['POST', `/v1/backups/${parent}/restore`, { target: vols }, svc.admin, 400, /is a directory, not a file/],
      ['POST', `/v1/backups/${parent}/restore`, { target: file }, svc.admin, 400, /target '.*base\.img' exists: set to_existing to write into it in place, or force to replace it/],
      ['GET', '/v1/nothing', undefined, null, 401, /bearer token is required/],
      ['PUT', '/v1/backups', { volume: file }, null, 401, /bearer token is required/],
      ['GET', '/v1/backups?sort=name', undefined, svc.admin, 400, /unknown field.*sort/],
      ['GET', '/v1/nothing', undefined, svc.admin, 404, /no such resource/],
      ['PUT', '/v1/backups', { volume: file }, svc.admin, 405, /not allowed/],
      ['POST', '/v1/jobs/nope/cancel', undefined, svc.admin, 404, /does not exist/],
      // Refused as the command line refuses --chunk-size 100000, not by the job once it runs.
      ['POST', '/v1/backups', { volume: file, chunk_size: 100_000 }, svc.admin, 400, /chunk_size 100000 is not a multiple of the sha block size 32768 \(Cinder requires it to hash whole blocks\)/],
      ['POST', '/v1/backups', { volume: file, volume_id: 'vol-bad', parent_id: parent, chunk_size: 40_960 }, svc.admin, 400, /chunk_size 40960 is not a multiple of the sha block size 32768/],
      ['POST', '/v1/backups', { volume: file }, null, 401, /bearer token is required/],
      ['POST', '/v1/backups', { volume: file }, 'not-a-token-at-all-0000', 401, /bearer token is required/],
      ['GET', '/v1/backups', undefined, `${svc.admin}x`, 401, /bearer token/],
      ['POST', '/v1/backups', { volume: file }, svc.reader, 403, /may only read/],
      ['DELETE', `/v1/backups/${child}`, undefined, svc.reader, 403, /may only read/],
    ];
    for (const [method, route, body, token, status, message] of cases) {
      const r = await svc.request(method, route, body, token);
      assert.equal(r.status, status, `${method} ${route} ${JSON.stringify(body)} -> ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, status);
      assert.match(r.body.error.message, message, `${method} ${route}`);
    }
    const now = await snapshot();
    assert.deepEqual(now.filter((x) => !before.includes(x)), [], 'refused requests change nothing');
    assert.equal(now.length, before.length);
    assert.equal((await svc.request('GET', `/v1/backups/${parent}`, undefined, svc.reader)).status, 200, 'a reader may read');
    assert.doesNotMatch(svc.logs(), new RegExp(svc.admin), 'tokens never reach the logs');
    assert.doesNotMatch(svc.logs(), new RegExp(svc.reader));

    // Deleting in the right order works: child, then parent.
    assert.equal((await svc.request('DELETE', `/v1/backups/${child}`)).status, 202);
    await svc.until(`/v1/backups?volume_id=vol-bad`, (b) => b.backups.length === 1);
    assert.equal((await svc.request('DELETE', `/v1/backups/${parent}`)).status, 202);
    await svc.until(`/v1/backups?volume_id=vol-bad`, (b) => b.backups.length === 0);
    assert.deepEqual(await objectsUnder(backend, catalog, parent), []);
  });

  it('lists with filters and pagination, exports and imports records', async () => {
    const file = path.join(vols, 'paged.img');
    writeFileSync(file, pseudoRandom(200_000, 12));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await svc.request('POST', '/v1/backups', { volume: file, volume_id: 'vol-page', name: `p${i}` })).body.backup.id);
    await svc.until('/v1/backups?volume_id=vol-page', (b) => b.backups.every((x: any) => x.status === 'available') && b.backups.length === 3);
    const first = (await svc.request('GET', '/v1/backups?volume_id=vol-page&limit=2')).body;
    assert.deepEqual(first.backups.map((b: any) => b.id), ids.slice(0, 2));
    for (const b of first.backups) {
      assert.ok(b.job_id, 'a listed backup names its latest job, running or not');
      assert.equal(b.job_id, (await svc.request('GET', `/v1/backups/${b.id}`)).body.backup.job_id);
    }
    assert.equal(first.backups_links[0].rel, 'next');
    const next = (await svc.request('GET', first.backups_links[0].href)).body;
    assert.deepEqual(next.backups.map((b: any) => b.id), [ids[2]]);
    assert.deepEqual(next.backups_links, []);
    assert.deepEqual((await svc.request('GET', '/v1/backups?name=p1')).body.backups.map((b: any) => b.id), [ids[1]]);

    const exported = (await svc.request('GET', `/v1/backups/${ids[1]}/export_record`)).body['backup-record'];
    assert.equal(exported.backup_service, 'cinder.backup.drivers.posix.PosixBackupDriver');
    assert.equal((await svc.request('POST', '/v1/backups/import_record', exported)).status, 409, 'already in the catalog');
    await catalog.purge(ids[1]!);
    const imported = await svc.request('POST', '/v1/backups/import_record', exported);
    assert.equal(imported.status, 201, JSON.stringify(imported.body));
    assert.equal(imported.body.backup.id, ids[1]);
    assert.equal(imported.body.backup.status, 'available');
    const target = path.join(vols, 'out', 'imported.img');
    const job = (await svc.request('POST', `/v1/backups/${ids[1]}/restore`, { target })).body.restore.job_id;
    const done = await svc.until(`/v1/jobs/${job}`, (b) => !['queued', 'running'].includes(b.job.status));
    assert.equal(done.job.status, 'succeeded', done.job.error);
    assert.ok(existsSync(target));
    // Results name their fields as records do.
    assert.deepEqual(Object.keys(done.job.result).filter((k) => /[A-Z]/.test(k)), []);
    assert.equal(done.job.result.objects_read, imported.body.backup.object_count);
  });

  it('publishes Prometheus metrics and an OpenAPI document that match what it serves', async () => {
    const jobs = (await svc.request('GET', '/v1/jobs?limit=1000')).body.jobs as any[];
    const metrics = (await svc.request('GET', '/metrics', undefined, null)).body as string;
    const succeeded = jobs.filter((j) => j.kind === 'backup' && j.status === 'succeeded').length;
    assert.match(metrics, new RegExp(`^chunkvault_jobs\\{kind="backup",status="succeeded"\\} ${succeeded}$`, 'm'));
    const failed = jobs.filter((j) => j.kind === 'backup' && j.status === 'failed').length;
    assert.ok(failed >= 1);
    assert.match(metrics, new RegExp(`^chunkvault_job_errors_total\\{kind="backup"\\} ${failed}$`, 'm'));
    const bytes = Number(/^chunkvault_job_bytes_total\{kind="backup"\} (\d+)$/m.exec(metrics)![1]);
    assert.ok(bytes >= 20 * 3 * MiB, `bytes backed up counted (${bytes})`);
    assert.match(metrics, /^chunkvault_http_request_duration_seconds_bucket\{le="0\.1",method="POST",route="\/v1\/backups",code="202"\} \d+$/m);
    // Jobs that ran and ended (one cancelled while queued never ran: it has no duration).
    const restores = jobs.filter((j) => j.kind === 'restore' && j.started_at !== null && !['queued', 'running'].includes(j.status)).length;
    assert.match(metrics, /^# TYPE chunkvault_job_duration_seconds histogram$/m);
    assert.match(metrics, new RegExp(`^chunkvault_job_duration_seconds_bucket\\{kind="restore",le="\\+Inf"\\} ${restores}$`, 'm'));
    assert.match(metrics, new RegExp(`^chunkvault_job_duration_seconds_count\\{kind="restore"\\} ${restores}$`, 'm'));
    assert.match(metrics, /^chunkvault_job_duration_seconds_bucket\{kind="backup",le="1"\} [1-9]\d*$/m);

    const doc = (await svc.request('GET', '/v1/openapi.json', undefined, null)).body;
    assert.equal(doc.openapi, '3.1.0');
    for (const p of ['/v1/backups', '/v1/backups/{id}', '/v1/backups/{id}/restore', '/v1/backups/{id}/export_record',
      '/v1/backups/import_record', '/v1/jobs', '/v1/jobs/{id}', '/v1/jobs/{id}/cancel']) assert.ok(doc.paths[p], p);
    const create = doc.components.schemas.CreateBackup;
    assert.deepEqual(create.required, ['volume']);
    assert.equal(create.additionalProperties, false);
    assert.deepEqual(Object.keys(doc.paths['/v1/backups']).sort(), ['get', 'post']);
  });
});

describe('service: graceful shutdown', () => {
  it('on SIGTERM stops claiming, lets the running job finish, and exits cleanly', async () => {
    const dir = path.join(tmp.dir, 'shutdown');
    mkdirSync(dir, { recursive: true });
    const db = await freshDatabase();
    // A long shutdown timeout: a service whose jobs are done must exit without waiting for it.
    const svc = await startService({ repo: path.join(dir, 'repo'), catalog: db, volumes: [`${dir}/**`], workers: 1, leaseSeconds: 3, shutdownSeconds: 600 });
    const catalog = await openCatalog(db);
    try {
      const fifo = await fifoVolume(dir, 'slow.img');
      const slow = (await svc.request('POST', '/v1/backups', { volume: fifo.path, volume_id: 'vol-s' })).body.backup.id;
      const writer = await fifo.open;
      await writer.write(pseudoRandom(MiB, 1));
      writeFileSync(path.join(dir, 'other.img'), pseudoRandom(MiB, 2));
      const waiting = (await svc.request('POST', '/v1/backups', { volume: path.join(dir, 'other.img'), volume_id: 'vol-o' })).body.backup;
      const exited = new Promise<number | null>((r) => svc.proc.once('exit', (code) => r(code)));
      svc.proc.kill('SIGTERM');
      // The running job ends only once its worker has heard the stop.
      await waitFor('the worker to hear the stop', () => /"name":"chunkvault-worker".*"msg":"shutting down"/.test(svc.logs()));
      await writer.write(pseudoRandom(MiB, 3));
      await writer.close();
      const early = await Promise.race([exited, sleep(60_000).then(() => 'still running')]);
      assert.equal(early, 0, svc.logs());
      assert.equal((await catalog.get(slow))!.status, 'available', 'the running job finished');
      assert.equal((await catalog.get(slow))!.volume_bytes, 2 * MiB);
      assert.equal((await catalog.jobs.get(waiting.job_id))!.status, 'queued', 'nothing new was claimed');
    } finally {
      await svc.stop();
      await catalog.close();
    }
  });

  it('cancels a job that outlives the shutdown timeout, leaving a truthful record', async () => {
    const dir = path.join(tmp.dir, 'shutdown-timeout');
    mkdirSync(dir, { recursive: true });
    const db = await freshDatabase();
    const svc = await startService({ repo: path.join(dir, 'repo'), catalog: db, volumes: [`${dir}/**`], workers: 1, leaseSeconds: 3, shutdownSeconds: 1 });
    const catalog = await openCatalog(db);
    try {
      const fifo = await fifoVolume(dir, 'stuck.img');
      const id = (await svc.request('POST', '/v1/backups', { volume: fifo.path, volume_id: 'vol-t', chunk_size: 256 * 1024 })).body.backup.id;
      const writer = await fifo.open;
      await writer.write(pseudoRandom(MiB, 1));
      await svc.until(`/v1/backups/${id}`, (b) => b.backup.progress?.bytes_done > 0);
      const exited = new Promise<number | null>((r) => svc.proc.once('exit', (code) => r(code)));
      svc.proc.kill('SIGTERM');
      assert.equal(await exited, 0, svc.logs());
      await writer.close().catch(() => {});
      const rec = (await catalog.get(id))!;
      assert.equal(rec.status, 'error');
      assert.match(rec.fail_reason!, /shutting down/);
      const [job] = await catalog.jobs.list({ backupId: id });
      assert.equal(job!.status, 'cancelled');
      const backend = await openBackend(path.join(dir, 'repo'));
      assert.deepEqual(await objectsUnder(backend, catalog, id), []);
      await backend.close();
    } finally {
      await svc.stop();
      await catalog.close();
    }
  });
});

describe('service: a cancel between two heartbeats of a running backup', () => {
  it('stops it before its commit point: the job ends cancelled, the backup error, nothing left in the repository; a restore likewise before its end', async () => {
    const dir = path.join(tmp.dir, 'cancel-between-beats');
    mkdirSync(dir, { recursive: true });
    // A long lease: heartbeats (the worker's regular look at the job) come 2 s apart, and the
    // backup below is done well within that once its data arrives.
    const svc = await startService({ repo: path.join(dir, 'repo'), catalog: path.join(dir, 'c.db'), volumes: [`${dir}/**`], workers: 1, leaseSeconds: 60 });
    const catalog = await openCatalog(path.join(dir, 'c.db'));
    const backend = await openBackend(path.join(dir, 'repo'));
    try {
      const fifo = await fifoVolume(dir, 'short.img');
      const created = (await svc.request('POST', '/v1/backups', { volume: fifo.path, volume_id: 'vol-short' })).body.backup;
      const writer = await fifo.open; // the job runs: its worker opened the volume
      const cancel = await svc.request('POST', `/v1/jobs/${created.job_id}/cancel`);
      assert.equal(cancel.status, 202);
      assert.equal(cancel.body.job.status, 'running', 'a running job is asked to stop');
      assert.equal(cancel.body.job.cancel_requested, true);
      await writer.write(pseudoRandom(MiB, 9));
      await writer.close();
      const ended = (await svc.until(`/v1/jobs/${created.job_id}`, (b) => b.job.status !== 'running')).job;
      assert.equal(ended.status, 'cancelled', JSON.stringify(ended));
      assert.match(ended.error, /was cancelled/);
      const rec = (await svc.request('GET', `/v1/backups/${created.id}`)).body.backup;
      assert.equal(rec.status, 'error', JSON.stringify(rec));
      assert.deepEqual(await objectsUnder(backend, catalog, created.id), [], 'no committed (or partial) backup is left');

      // A restore too: into a named pipe, held until the cancel is in, then read to its end.
      writeFileSync(path.join(dir, 'small.img'), pseudoRandom(MiB, 10));
      const source = (await svc.request('POST', '/v1/backups', { volume: path.join(dir, 'small.img'), volume_id: 'vol-small' })).body.backup;
      await svc.until(`/v1/backups/${source.id}`, (b) => b.backup.status === 'available');
      const pipe = path.join(dir, 'restore-pipe');
      execFileSync('mkfifo', [pipe]);
      const restore = (await svc.request('POST', `/v1/backups/${source.id}/restore`, { target: pipe })).body.restore;
      const reader = await fsp.open(pipe, 'r'); // the job runs: its worker opened the pipe
      const stop = await svc.request('POST', `/v1/jobs/${restore.job_id}/cancel`);
      assert.equal(stop.body.job.status, 'running', 'a running job is asked to stop');
      for (const buf = Buffer.alloc(MiB); (await reader.read(buf, 0, buf.length)).bytesRead > 0;);
      await reader.close();
      const stopped = (await svc.until(`/v1/jobs/${restore.job_id}`, (b) => b.job.status !== 'running')).job;
      assert.equal(stopped.status, 'cancelled', JSON.stringify(stopped));
      assert.equal((await svc.request('GET', `/v1/backups/${source.id}`)).body.backup.status, 'available', 'the backup is given back');
    } finally {
      await svc.stop();
      await catalog.close();
      await backend.close();
    }
  });
});

describe('service: catalog outage', () => {
  it('still serves its own metrics, with chunkvault_catalog_up 0, and says unhealthy', async () => {
    const dir = path.join(tmp.dir, 'outage');
    mkdirSync(dir, { recursive: true });
    const db = await freshDatabase();
    const svc = await startService({ repo: path.join(dir, 'repo'), catalog: db, volumes: [`${dir}/**`], workers: 0 });
    try {
      assert.match((await svc.request('GET', '/metrics', undefined, null)).body, /^chunkvault_catalog_up 1$/m);
      await dropDatabase(db);
      await sleep(600); // one catalog query serves the scrapes of half a second
      const down = await svc.request('GET', '/metrics', undefined, null);
      assert.equal(down.status, 200);
      assert.match(down.body, /^chunkvault_catalog_up 0$/m);
      assert.match(down.body, /^chunkvault_process_resident_memory_bytes \d+$/m);
      assert.match(down.body, /^chunkvault_http_request_duration_seconds_count\{method="GET",route="\/metrics",code="200"\} \d+$/m);
      assert.doesNotMatch(down.body, /^chunkvault_jobs\{/m, 'no job figures without the catalog');
      assert.equal((await svc.request('GET', '/healthz', undefined, null)).status, 503);
    } finally {
      await svc.stop();
    }
  });
});

/** The service with its PostgreSQL catalog reached through a proxy that can hold back or cut off answers. */
async function serviceBehindProxy(label: string, o: { workers: number; shutdownSeconds?: number; leaseSeconds?: number }) {
  const dir = path.join(tmp.dir, label);
  mkdirSync(dir, { recursive: true });
  const db = new URL(await freshDatabase());
  const proxy = await startThrottleProxy({ host: db.hostname, port: Number(db.port) });
  const viaProxy = new URL(db);
  viaProxy.port = new URL(proxy.url).port;
  const svc = await startService({ repo: path.join(dir, 'repo'), catalog: viaProxy.href, volumes: [`${dir}/**`], ...o });
  return { svc, proxy, dir };
}

describe('service: a catalog that stops answering', () => {
  it('says unhealthy, serves metrics with chunkvault_catalog_up 0, and shuts down on SIGTERM', async () => {
    // Every answer held back: a frozen server, or a network that drops packets (connections
    // stay open and nothing comes back).
    const { svc, proxy } = await serviceBehindProxy('frozen', { workers: 2, shutdownSeconds: 2 });
    try {
      assert.match((await svc.request('GET', '/metrics', undefined, null)).body, /^chunkvault_catalog_up 1$/m);
      // Both workers are up and polling for jobs (every half second): once the catalog freezes,
      // each has a claim waiting on it when the service is told to stop.
      for (let i = 0; i < 300 && (svc.logs().match(/"worker started"/g) ?? []).length < 2; i++) await sleep(100);
      assert.equal((svc.logs().match(/"worker started"/g) ?? []).length, 2, svc.logs());
      proxy.delayMs = 3_600_000;
      await sleep(600); // one catalog query serves the scrapes of half a second
      const health = await svc.request('GET', '/healthz', undefined, null);
      assert.equal(health.status, 503);
      assert.match(health.body.error.message, /catalog unreachable: no answer within 3 s/);
      const metrics = await svc.request('GET', '/metrics', undefined, null);
      assert.equal(metrics.status, 200);
      assert.match(metrics.body, /^chunkvault_catalog_up 0$/m);
      // An idle worker's claim is abandoned, not waited for: the service is gone before the
      // catalog's 30 s query timeout could have failed that claim. 15 s is many times what the
      // exit takes even on a loaded machine, and half of what waiting for the claim would take.
      const exited = new Promise<number | null>((r) => svc.proc.once('exit', (code) => r(code)));
      svc.proc.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(15_000).then(() => 'still running (waiting for the frozen catalog)')]);
      assert.equal(code, 0, svc.logs());
      assert.equal(svc.logs().match(/"clean":true,"msg":"worker stopped"/g)?.length, 2, svc.logs());
    } finally {
      await svc.stop();
      await proxy.close();
    }
  });
});

describe('service: a catalog that goes away while a job finishes', () => {
  it('records the outcome once it is back: a restore that finished is succeeded, its backup available', async () => {
    // A lease longer than the outage: a job whose lease ran out meanwhile is no longer its worker's to record.
    const { svc, proxy, dir } = await serviceBehindProxy('catalog-gone', { workers: 1, leaseSeconds: 30 });
    try {
      const volume = pseudoRandom(3 * MiB, 41);
      writeFileSync(path.join(dir, 'v.img'), volume);
      const id = (await svc.request('POST', '/v1/backups', { volume: path.join(dir, 'v.img') })).body.backup.id;
      await svc.until(`/v1/backups/${id}`, (b) => b.backup.status === 'available');
      // A restore into a pipe: it finishes when the test reads it, which it does with the catalog gone.
      const target = path.join(dir, 'out.pipe');
      execFileSync('mkfifo', [target]);
      const reader = openSync(target, fsc.O_RDONLY | fsc.O_NONBLOCK); // there for the restore to find, not read yet
      const job = (await svc.request('POST', `/v1/backups/${id}/restore`, { target })).body.restore.job_id;
      const { worker } = (await svc.until(`/v1/jobs/${job}`, (b) => b.job.status === 'running')).job;
      // The catalog goes once the restore writes its target: it has done what it needs the catalog for until it ends.
      await waitFor('the restore to open its target', () => hasOpen(Number(worker.split(':').at(-1)), target));
      proxy.down = true;
      const restored = await new Promise<Buffer>((resolve, reject) => {
        const parts: Buffer[] = [];
        new net.Socket({ fd: reader, readable: true, writable: false })
          .on('data', (d: Buffer) => parts.push(d)).on('end', () => resolve(Buffer.concat(parts))).on('error', reject);
      });
      assert.ok(restored.equals(volume), 'the restore itself finished');
      await waitFor('the worker to try to record the outcome', () => /could not record the job outcome yet: trying again/.test(svc.logs()));
      proxy.down = false;
      const ended = await svc.until(`/v1/jobs/${job}`, (b) => b.job.status !== 'running');
      assert.equal(ended.job.status, 'succeeded', JSON.stringify(ended.job));
      assert.equal((await svc.request('GET', `/v1/backups/${id}`)).body.backup.status, 'available');
    } finally {
      proxy.down = false;
      await svc.stop();
      await proxy.close();
    }
  });
});

describe('service: worker processes', () => {
  it('stop when the serve process that started them is killed', async () => {
    const dir = path.join(tmp.dir, 'orphans');
    mkdirSync(dir, { recursive: true });
    const svc = await startService({ repo: path.join(dir, 'repo'), catalog: path.join(dir, 'c.db'), volumes: [`${dir}/**`], workers: 1 });
    try {
      writeFileSync(path.join(dir, 'v.img'), pseudoRandom(100_000, 1));
      const id = (await svc.request('POST', '/v1/backups', { volume: path.join(dir, 'v.img') })).body.backup.id;
      const b = await svc.until(`/v1/backups/${id}`, (x) => x.backup.status === 'available');
      const worker = (await svc.request('GET', `/v1/jobs/${b.backup.job_id}`)).body.job.worker as string;
      const pid = Number(worker.split(':').at(-1));
      // Alive: present and not a zombie (an orphan's exit may wait for a reaper that never comes).
      const alive = () => {
        try {
          return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
        } catch {
          return false;
        }
      };
      assert.ok(alive());
      svc.proc.kill('SIGKILL');
      for (let i = 0; i < 100 && alive(); i++) await sleep(100);
      assert.equal(alive(), false, 'the worker left on its own');
    } finally {
      await svc.stop();
    }
  });
});

describe('service: embedded SQLite catalog', () => {
  it('runs the same jobs with workers sharing one SQLite file', async () => {
    const dir = path.join(tmp.dir, 'sqlite');
    const vols = path.join(dir, 'vols');
    mkdirSync(vols, { recursive: true });
    const svc = await startService({ repo: path.join(dir, 'repo'), catalog: path.join(dir, 'catalog.db'), volumes: [`${vols}/**`], workers: 2 });
    try {
      const files = [0, 1, 2].map((i) => {
        const f = path.join(vols, `d${i}.img`);
        writeFileSync(f, pseudoRandom(MiB + i * 4096, 40 + i));
        return f;
      });
      const ids = await Promise.all(files.map(async (volume) => {
        const full = (await svc.request('POST', '/v1/backups', { volume, chunk_size: 256 * 1024 })).body.backup.id;
        const incr = (await svc.request('POST', '/v1/backups', { volume, incremental: true })).body.backup.id;
        return [full, incr];
      }));
      for (const [i, [full, incr]] of ids.entries()) {
        const b = await svc.until(`/v1/backups/${incr}`, (x) => x.backup.status !== 'creating');
        assert.equal(b.backup.status, 'available', b.backup.fail_reason);
        assert.equal(b.backup.parent_id, full);
        const target = path.join(vols, `out-${i}.img`);
        const job = (await svc.request('POST', `/v1/backups/${incr}/restore`, { target })).body.restore.job_id;
        const done = await svc.until(`/v1/jobs/${job}`, (x) => !['queued', 'running'].includes(x.job.status));
        assert.equal(done.job.status, 'succeeded', done.job.error);
        assert.ok(readFileSync(target).equals(readFileSync(files[i]!)));
      }
    } finally {
      await svc.stop();
    }
  });
});
