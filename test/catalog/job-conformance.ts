/** One suite for every JobQueue: each catalog implementation runs it against a fresh database. */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import type { Catalog } from '../../src/catalog/catalog.js';
import { openCatalog } from '../../src/catalog/open.js';
import type { NewJob } from '../../src/catalog/jobs.js';

const job = (id: string, resource = `vol:${id}`, over: Partial<NewJob> = {}): NewJob => ({
  id, kind: 'backup', backup_id: `b-${id}`, resource, params: { volume: `/v/${id}`, n: 1 }, ...over,
});

export function jobQueueConformance(name: string, newAddress: () => Promise<string>): void {
  describe(`Job queue conformance: ${name}`, () => {
    const open: Catalog[] = [];
    const fresh = async (address?: string) => {
      const c = await openCatalog(address ?? (await newAddress()));
      open.push(c);
      return c;
    };
    after(async () => {
      for (const c of open) await c.close();
    });

    it('enqueues, reads back, and claims oldest first under a lease', async () => {
      const { jobs } = await fresh();
      const q = await jobs.enqueue(job('j1'));
      assert.equal(q.status, 'queued');
      assert.deepEqual(q.params, { volume: '/v/j1', n: 1 });
      assert.equal(q.attempts, 0);
      await jobs.enqueue(job('j2'));
      const before = Date.now();
      const c1 = (await jobs.claim('w1', 5000))!;
      assert.equal(c1.id, 'j1');
      assert.equal(c1.status, 'running');
      assert.equal(c1.worker, 'w1');
      assert.equal(c1.attempts, 1);
      assert.ok(c1.lease_expires_at! >= before + 5000 && c1.lease_expires_at! <= Date.now() + 5000);
      assert.equal((await jobs.claim('w2', 5000))!.id, 'j2');
      assert.equal(await jobs.claim('w3', 5000), undefined);
      assert.deepEqual((await jobs.list()).map((j) => j.id), ['j2', 'j1']);
      assert.deepEqual((await jobs.list({ status: 'running', limit: 1 })).map((j) => j.id), ['j2']);
      assert.deepEqual((await jobs.list({ backupId: 'b-j1' })).map((j) => j.id), ['j1']);
    });

    it("finds each backup's newest job in one call", async () => {
      const { jobs } = await fresh();
      await jobs.enqueue(job('a1', 'vol:A', { backup_id: 'A' }));
      await jobs.enqueue(job('b1', 'vol:B', { backup_id: 'B' }));
      await jobs.enqueue(job('a2', 'backup:A', { backup_id: 'A', kind: 'restore' }));
      await jobs.enqueue(job('c1', 'vol:C', { backup_id: 'C' }));
      const latest = await jobs.latestFor(['A', 'B', 'none']);
      assert.deepEqual([...latest.entries()].map(([b, j]) => [b, j.id]).sort(), [['A', 'a2'], ['B', 'b1']]);
      assert.equal(latest.get('A')!.kind, 'restore');
      assert.equal((await jobs.latestFor([])).size, 0);
    });

    it('runs jobs on one resource one at a time, in queue order', async () => {
      const { jobs } = await fresh();
      await jobs.enqueue(job('full', 'vol:A'));
      await jobs.enqueue(job('incr', 'vol:A'));
      await jobs.enqueue(job('other', 'vol:B'));
      assert.equal((await jobs.claim('w1', 5000))!.id, 'full');
      assert.equal((await jobs.claim('w2', 5000))!.id, 'other'); // incr waits for full
      assert.equal(await jobs.claim('w3', 5000), undefined);
      assert.ok(await jobs.finish('full', 'w1', 'succeeded', { bytes: 10, seconds: 2, retries: 1, result: { ok: true } }));
      const incr = (await jobs.claim('w3', 5000))!;
      assert.equal(incr.id, 'incr');
      const done = (await jobs.get('full'))!;
      assert.equal(done.status, 'succeeded');
      assert.deepEqual(done.result, { ok: true });
      assert.equal(done.lease_expires_at, null);
      assert.ok(done.finished_at);
    });

    it('renews leases with progress, and only for the worker holding the job', async () => {
      const { jobs } = await fresh();
      await jobs.enqueue(job('j'));
      const claimed = (await jobs.claim('w1', 1000))!;
      const progress = { bytes_done: 5, bytes_total: 10, percent: 50, bytes_per_second: 2.5 };
      assert.deepEqual(await jobs.heartbeat('j', 'w1', 60_000, progress), { cancelRequested: false });
      const now = (await jobs.get('j'))!;
      assert.deepEqual(now.progress, progress);
      assert.ok(now.lease_expires_at! > claimed.lease_expires_at! + 50_000);
      assert.equal(await jobs.heartbeat('j', 'intruder', 60_000), undefined);
      assert.equal(await jobs.finish('j', 'intruder', 'failed', { error: 'x' }), false);
      assert.deepEqual((await jobs.get('j'))!.progress, progress); // a heartbeat without progress keeps the last
    });

    it('cancels a queued job at once and asks a running one to stop', async () => {
      const { jobs } = await fresh();
      await jobs.enqueue(job('run'));
      await jobs.enqueue(job('wait'));
      await jobs.claim('w1', 5000);
      const waiting = (await jobs.cancel('wait'))!;
      assert.equal(waiting.status, 'cancelled');
      assert.ok(waiting.finished_at);
      assert.equal(await jobs.claim('w2', 5000), undefined, 'a cancelled job is never claimed');
      const running = (await jobs.cancel('run'))!;
      assert.equal(running.status, 'running');
      assert.equal(running.cancel_requested, true);
      assert.deepEqual(await jobs.heartbeat('run', 'w1', 5000), { cancelRequested: true });
      assert.ok(await jobs.finish('run', 'w1', 'cancelled', { error: 'cancelled' }));
      assert.equal(await jobs.cancel('run'), undefined, 'an ended job cannot be cancelled');
      assert.equal(await jobs.cancel('missing'), undefined);
    });

    it('reaps jobs whose lease ran out; their worker can neither renew nor finish them', async () => {
      const { jobs } = await fresh();
      await jobs.enqueue(job('dead'));
      await jobs.enqueue(job('alive'));
      await jobs.claim('w-dead', 50);
      await jobs.claim('w-alive', 60_000);
      await sleep(120);
      const reaped = await jobs.reapExpired();
      assert.deepEqual(reaped.map((j) => j.id), ['dead']);
      assert.equal(reaped[0]!.status, 'failed');
      assert.match(reaped[0]!.error!, /lease expired.*w-dead/);
      assert.deepEqual(await jobs.reapExpired(), [], 'a job is reaped once');
      assert.equal(await jobs.heartbeat('dead', 'w-dead', 5000), undefined);
      assert.equal(await jobs.finish('dead', 'w-dead', 'succeeded', {}), false);
      assert.equal((await jobs.get('alive'))!.status, 'running');
    });

    it('summarises jobs by kind and status for metrics', async () => {
      const { jobs } = await fresh();
      for (const [id, seconds] of [['a', 0.5], ['b', 10], ['c', 100]] as const) {
        await jobs.enqueue(job(id));
        await jobs.claim('w', 5000);
        await jobs.finish(id, 'w', 'succeeded', { bytes: 1000, seconds, retries: 1 });
      }
      await jobs.enqueue(job('q', 'r', { kind: 'restore' }));
      const stats = await jobs.stats();
      const ok = stats.find((s) => s.kind === 'backup' && s.status === 'succeeded')!;
      assert.deepEqual({ ...ok }, { kind: 'backup', status: 'succeeded', count: 3, bytes: 3000, seconds: 110.5, retries: 3, timed: 3, buckets: [1, 1, 2, 2, 3, 3, 3] });
      const queued = stats.find((s) => s.kind === 'restore')!;
      assert.equal(queued.status, 'queued');
      assert.equal(queued.count, 1);
      assert.equal(queued.timed, 0);
    });

    it('hands every job to exactly one of many concurrent claimers', async () => {
      const address = await newAddress();
      const handles = await Promise.all(Array.from({ length: 4 }, () => fresh(address)));
      for (let i = 0; i < 24; i++) await handles[0]!.jobs.enqueue(job(`j${i}`, `vol:${i % 6}`));
      const claimed: string[] = [];
      const worker = async (h: Catalog, w: string) => {
        for (;;) {
          const j = await h.jobs.claim(w, 60_000);
          if (!j) {
            if ((await h.jobs.list({ status: 'queued' })).length === 0) return;
            await sleep(5);
            continue;
          }
          claimed.push(j.id);
          const running = await h.jobs.list({ status: 'running' });
          assert.equal(new Set(running.map((r) => r.resource)).size, running.length, 'one running job per resource');
          await sleep(2);
          assert.ok(await h.jobs.finish(j.id, w, 'succeeded', {}));
        }
      };
      await Promise.all(handles.flatMap((h, i) => [worker(h, `w${i}a`), worker(h, `w${i}b`)]));
      assert.equal(claimed.length, 24);
      assert.equal(new Set(claimed).size, 24);
      for (let r = 0; r < 6; r++) {
        const order = claimed.filter((id) => Number(id.slice(1)) % 6 === r).map((id) => Number(id.slice(1)));
        assert.deepEqual(order, [...order].sort((a, b) => a - b), `resource ${r} in queue order`);
      }
    });
  });
}
