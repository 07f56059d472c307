/** The service on object stores: S3 (Swift's s3api) and native Swift, with a PostgreSQL catalog. */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { scratch } from '../support/cinder-fixtures.js';
import { pseudoRandom } from '../support/engine-helpers.js';
import { freshDatabase } from '../support/pg-server.js';
import { startService, startThrottleProxy } from '../support/service.js';
import { swiftServer, uniqueName } from '../support/swift-server.js';
import { MiB, fleetScenario } from './scenarios.js';

const tmp = scratch('service-objstore');
after(() => tmp.cleanup());

describe('service: S3 repository, PostgreSQL catalog, three workers', () => {
  it('runs 20 concurrent backup jobs across 5 volumes, then restores each byte for byte', async () => {
    const server = swiftServer();
    const dir = path.join(tmp.dir, 's3');
    mkdirSync(path.join(dir, 'vols'), { recursive: true });
    const svc = await startService({
      repo: server.s3Address(uniqueName('svc'), '&path_style=true'), catalog: await freshDatabase(),
      volumes: [`${dir}/vols/**`], workers: 2,
    });
    svc.startWorker(); // a third worker, started on its own as another host would
    try {
      await fleetScenario(svc, dir, 's3');
      assert.match(svc.logs(), /"name":"chunkvault-worker".*"msg":"worker started"[\s\S]*"name":"chunkvault-worker".*"msg":"worker started"[\s\S]*"name":"chunkvault-worker".*"msg":"worker started"/);
    } finally {
      await svc.stop();
    }
  });
});

describe('service: Swift repository behind a slow link', () => {
  it('cancels a running restore: no target, no temporary file, the backup stays available', async () => {
    const server = swiftServer();
    const u = new URL(server.url);
    const proxy = await startThrottleProxy({ host: u.hostname, port: Number(u.port) });
    const dir = path.join(tmp.dir, 'swift');
    const vols = path.join(dir, 'vols');
    mkdirSync(vols, { recursive: true });
    const svc = await startService({
      repo: `swift://${uniqueName('svc')}?auth=${encodeURIComponent(`${proxy.url}/auth/v1.0`)}`, catalog: await freshDatabase(),
      volumes: [`${vols}/**`], workers: 2,
    });
    try {
      const source = path.join(vols, 'disk.img');
      writeFileSync(source, pseudoRandom(6 * MiB, 3));
      const id = (await svc.request('POST', '/v1/backups', { volume: source, chunk_size: MiB, compression: 'none' })).body.backup.id;
      const b = await svc.until(`/v1/backups/${id}`, (x) => x.backup.status !== 'creating');
      assert.equal(b.backup.status, 'available', b.backup.fail_reason);

      proxy.delayMs = 40; // every answer from Swift now crawls
      const target = path.join(vols, 'restored.img');
      const job = (await svc.request('POST', `/v1/backups/${id}/restore`, { target })).body.restore.job_id;
      await svc.until(`/v1/jobs/${job}`, (x) => x.job.status === 'running');
      // Claimed, and then (not at once) the backup is taken for the restore.
      await svc.until(`/v1/backups/${id}`, (x) => x.backup.status === 'restoring');
      assert.equal((await svc.request('DELETE', `/v1/backups/${id}`)).status, 409, 'a backup being restored cannot be deleted');
      const cancel = await svc.request('POST', `/v1/jobs/${job}/cancel`);
      assert.equal(cancel.status, 202);
      assert.equal(cancel.body.job.cancel_requested, true);
      const ended = await svc.until(`/v1/jobs/${job}`, (x) => x.job.status !== 'running', 60_000);
      assert.equal(ended.job.status, 'cancelled', ended.job.error);
      assert.equal(existsSync(target), false);
      assert.deepEqual(readdirSync(vols).filter((n) => n.includes('chunkvault-tmp')), [], 'no temporary file left');
      assert.equal((await svc.request('GET', `/v1/backups/${id}`)).body.backup.status, 'available');
      assert.equal((await svc.request('POST', `/v1/jobs/${job}/cancel`)).status, 409, 'an ended job cannot be cancelled');

      proxy.delayMs = 0;
      const again = (await svc.request('POST', `/v1/backups/${id}/restore`, { target })).body.restore.job_id;
      const ok = await svc.until(`/v1/jobs/${again}`, (x) => !['queued', 'running'].includes(x.job.status), 60_000);
      assert.equal(ok.job.status, 'succeeded', ok.job.error);
      assert.ok(readFileSync(target).equals(readFileSync(source)));
    } finally {
      await svc.stop();
      await proxy.close();
    }
  });
});
