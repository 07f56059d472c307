/** What happens to each kind of job whose worker vanished, on a real SQLite catalog and posix repository. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import type { JobKind, JobRecord } from '../../src/catalog/jobs.js';
import { WorkerPool } from '../../src/engine/worker-pool.js';
import { CancelledError, ConflictError } from '../../src/errors.js';
import { executeJob } from '../../src/service/executor.js';
import { restoreTempPath } from '../../src/engine/restore-output.js';
import { dataObjectName } from '../../src/format/naming.js';
import { createLogger } from '../../src/service/log.js';
import { ORPHAN_AGE_MS, reapAbandonedJobs } from '../../src/service/reaper.js';
import { Requests } from '../../src/service/requests.js';
import { AllowList } from '../../src/service/allow-list.js';
import { makeRepo, pseudoRandom } from '../support/engine-helpers.js';

const log = createLogger('test', 'silent');

describe('reaping abandoned jobs', () => {
  const repo = makeRepo('reaper');
  after(() => repo.close());
  const { catalog, backend } = repo;

  /** A job of `kind` on `backupId`, claimed by a worker that then goes silent. */
  async function abandoned(kind: JobKind, backupId: string, params: Record<string, unknown> = {}) {
    const id = randomUUID();
    await catalog.jobs.enqueue({ id, kind, backup_id: backupId, resource: `backup:${backupId}`, params });
    assert.equal((await catalog.jobs.claim('gone:1', 20))!.id, id);
    await sleep(40);
    return id;
  }

  it('a backup: its partial objects are removed and the record says why it failed', async () => {
    const r = await repo.backup(repo.file('a.img', pseudoRandom(300_000, 1)));
    // Make the finished backup look like one cut off mid-write: record `creating`, objects present.
    await catalog.update(r.id, { status: 'creating', worker: 'gone:1' });
    const id = await abandoned('backup', r.id);
    const reaped = await reapAbandonedJobs(catalog, backend, log);
    assert.deepEqual(reaped.map((j) => j.id), [id]);
    const rec = (await catalog.get(r.id))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /^lease expired.*gone:1.*; \d+ partial object\(s\) removed$/);
    const left: string[] = [];
    for await (const n of backend.list(r.container, r.prefix)) left.push(n);
    assert.deepEqual(left, []);
    assert.equal((await catalog.jobs.get(id))!.status, 'failed');
  });

  it('a restore: its unfinished file is removed and the backup is available again', async () => {
    const r = await repo.backup(repo.file('b.img', pseudoRandom(100_000, 2)));
    await catalog.update(r.id, { status: 'restoring', worker: 'gone:1' });
    const target = path.join(repo.dir, 'restored.img');
    const other = repo.file('other.img', Buffer.from('keep'));
    const id = randomUUID();
    await catalog.jobs.enqueue({ id, kind: 'restore', backup_id: r.id, resource: `backup:${r.id}`, params: { target } });
    await catalog.jobs.claim('gone:1', 20);
    writeFileSync(restoreTempPath(target, `job-${id}`), 'half');
    await sleep(40);
    await reapAbandonedJobs(catalog, backend, log);
    assert.equal((await catalog.get(r.id))!.status, 'available');
    assert.equal(existsSync(restoreTempPath(target, `job-${id}`)), false);
    assert.equal(existsSync(target), false);
    assert.equal(readFileSync(other, 'utf8'), 'keep');
  });

  it('a delete is queued again, up to three attempts, then the backup is marked error', async () => {
    const r = await repo.backup(repo.file('c.img', pseudoRandom(100_000, 3)));
    await catalog.update(r.id, { status: 'deleting' });
    let params: Record<string, unknown> = { attempt: 1 };
    for (let attempt = 1; attempt <= 3; attempt++) {
      await abandoned('delete', r.id, params);
      await reapAbandonedJobs(catalog, backend, log);
      const queued = await catalog.jobs.list({ backupId: r.id, status: 'queued' });
      if (attempt < 3) {
        assert.equal(queued.length, 1, `attempt ${attempt} is followed by another`);
        assert.deepEqual(queued[0]!.params, { attempt: attempt + 1 });
        assert.equal((await catalog.get(r.id))!.status, 'deleting');
        params = queued[0]!.params;
        await catalog.jobs.cancel(queued[0]!.id); // the next attempt is enqueued by the test itself
      } else {
        assert.equal(queued.length, 0);
      }
    }
    const rec = (await catalog.get(r.id))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /delete abandoned 3 times/);
    // Its objects are still all there: nothing was lost to a half-done delete.
    assert.ok(await backend.get(r.container, dataObjectName(r.prefix, 1)));
  });
  it('a delete queued again after its worker died, then cancelled, leaves the backup error (objects may be gone), not available', async () => {
    const r = await repo.backup(repo.file('d.img', pseudoRandom(100_000, 4)));
    await catalog.update(r.id, { status: 'deleting' });
    await abandoned('delete', r.id, { attempt: 1, previous_status: 'available' });
    await reapAbandonedJobs(catalog, backend, log);
    const [again] = await catalog.jobs.list({ backupId: r.id, status: 'queued' });
    const requests = new Requests(catalog, backend, new AllowList([]));
    assert.equal((await requests.cancelJob(again!.id)).status, 'cancelled');
    const rec = (await catalog.get(r.id))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /delete cancelled after an earlier attempt had begun removing its objects/);
  });
  it('jobs that end before they begin leave truthful records: a cancel at the claim, a delete refused', async () => {
    const pool = new WorkerPool(1);
    const deps = { backend, catalog, allow: new AllowList([`${repo.dir}/**`]), pool };
    const job = (kind: JobKind, backupId: string, params: Record<string, unknown>): JobRecord => ({
      id: randomUUID(), kind, backup_id: backupId, resource: `backup:${backupId}`, params, status: 'running', attempts: 1,
      worker: 'here:1', lease_until: null, progress: null, result: null, error: null, created_at: '', started_at: null, finished_at: null,
    } as unknown as JobRecord);
    try {
      // A backup job cancelled while it was being claimed: its record says so, it is not left `creating`.
      const base = (await repo.backup(repo.file('e.img', pseudoRandom(50_000, 5)), { volumeId: 'claimed' }));
      const rec = (await catalog.get(base.id))!;
      await catalog.create({ ...rec, id: 'claimed-then-cancelled', status: 'creating', service_metadata: null, worker: null });
      const cancelled = AbortSignal.abort(new CancelledError('cancelled'));
      await assert.rejects(executeJob(job('backup', 'claimed-then-cancelled', { volume: repo.file('e.img', pseudoRandom(50_000, 5)), volume_id: 'claimed' }), deps, cancelled, () => {}),
        CancelledError);
      assert.equal((await catalog.get('claimed-then-cancelled'))!.status, 'error');

      // A delete that finds an incremental now depends on the backup: refused, and given back.
      const child = await repo.backup(repo.file('e.img', pseudoRandom(50_000, 6)), { volumeId: 'claimed', incremental: true, parentId: base.id });
      assert.ok(child.parentId === base.id);
      await catalog.update(base.id, { status: 'deleting' });
      await assert.rejects(executeJob(job('delete', base.id, { attempt: 1, previous_status: 'available' }), deps, new AbortController().signal, () => {}),
        ConflictError);
      assert.equal((await catalog.get(base.id))!.status, 'available');
    } finally {
      await pool.close();
    }
  });
  it('records whose job was never queued (the catalog failed in between) end error; others are left alone', async () => {
    const r = await repo.backup(repo.file('f.img', pseudoRandom(50_000, 7)));
    const base = (await catalog.get(r.id))!;
    const old = new Date(Date.now() - ORPHAN_AGE_MS - 1000).toISOString();
    const make = async (id: string, status: 'creating' | 'deleting', updatedAt: string, worker: string | null = null) => {
      await catalog.create({ ...base, id, status, worker });
      await catalog.update(id, { updated_at: updatedAt });
    };
    await make('orphan-creating', 'creating', old);
    await make('orphan-deleting', 'deleting', old);
    await make('young-creating', 'creating', new Date().toISOString());
    await make('written-by-someone', 'creating', old, 'elsewhere:1');
    await make('queued-deleting', 'deleting', old);
    await catalog.jobs.enqueue({ id: randomUUID(), kind: 'delete', backup_id: 'queued-deleting', resource: 'backup:queued-deleting', params: {} });
    await catalog.update('queued-deleting', { updated_at: old });
    await reapAbandonedJobs(catalog, backend, log);
    const status = async (id: string) => (await catalog.get(id))!;
    assert.equal((await status('orphan-creating')).status, 'error');
    assert.match((await status('orphan-creating')).fail_reason!, /its backup job was never queued/);
    assert.equal((await status('orphan-deleting')).status, 'error');
    assert.match((await status('orphan-deleting')).fail_reason!, /its delete job was never queued.*delete it again/);
    assert.equal((await status('young-creating')).status, 'creating');
    assert.equal((await status('written-by-someone')).status, 'creating');
    assert.equal((await status('queued-deleting')).status, 'deleting');
  });
});
