/**
 * Backups and restores through a flaky network (resets, 503s, stalls injected between
 * chunkvault and a real Swift server) still complete and verify; the retries are counted.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Backend } from '../../src/backends/backend.js';
import { RetryBackend, type RetryPolicy } from '../../src/backends/retry.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { runBackup } from '../../src/engine/backup.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { deleteBackup } from '../../src/engine/delete.js';
import { openSource } from '../../src/engine/source.js';
import { BackendError, CancelledError, IntegrityError, TransientBackendError } from '../../src/errors.js';
import { scratch } from '../support/cinder-fixtures.js';
import { startFaultProxy, type FaultProxy, type FaultProxyOptions } from '../support/fault-proxy.js';
import { s3Backend, swiftBackend, swiftServer, uniqueName } from '../support/swift-server.js';

const FAST_RETRY = { attempts: 8, baseDelayMs: 20, maxDelayMs: 200, totalMs: 60_000 };

describe('retries against a flaky object store', () => {
  const tmp = scratch('faults');
  let proxy: FaultProxy;
  const volume = path.join(tmp.dir, 'vol.img');
  const changed = path.join(tmp.dir, 'vol2.img');

  before(async () => {
    const server = new URL(swiftServer().url);
    proxy = await startFaultProxy({ host: server.hostname, port: Number(server.port) }, { every: 7, maxFaults: 30 });
    const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(2 << 20), randomBytes(1 << 20)]);
    writeFileSync(volume, data);
    randomBytes(100_000).copy(data, 4 << 20);
    writeFileSync(changed, data);
  });
  after(async () => {
    await proxy.close();
    tmp.cleanup();
  });

  const targets: [string, (c: string) => Backend][] = [
    ['swift', (c) => swiftBackend(c, { authUrl: `${proxy.url}/auth/v1.0`, requestTimeoutMs: 1500 })],
    ['s3', (c) => s3Backend(c, { endpoint: proxy.url, requestTimeoutMs: 1500 })],
  ];
  for (const [name, make] of targets) {
    it(`${name}: full + incremental backup and restore complete, verified, with retries counted`, { timeout: 180_000 }, async () => {
      const container = uniqueName(`faults-${name}`);
      const backend = new RetryBackend(make(container), FAST_RETRY);
      const catalog = new SqliteCatalog(path.join(tmp.dir, `${name}.db`));
      try {
        const opts = { backend, catalog, volumeId: `vol-${name}`, container, chunkSize: 256 * 1024, shaBlockSize: 32 * 1024, threads: 1 };
        const backup = async (file: string, incremental: boolean) => {
          const source = await openSource(file);
          try {
            return await runBackup({ ...opts, source, incremental });
          } finally {
            await source.close();
          }
        };
        const full = await backup(volume, false);
        const incr = await backup(changed, true);
        const target = path.join(tmp.dir, `${name}.out`);
        const r = await restoreBackup({ backend, catalog, backupId: incr.id, target, threads: 1 });
        assert.ok(readFileSync(target).equals(readFileSync(changed)));
        const d1 = await deleteBackup({ backend, catalog, backupId: incr.id });
        const d2 = await deleteBackup({ backend, catalog, backupId: full.id });
        const retried = full.retries + incr.retries + r.retries + d1.retries + d2.retries;
        assert.ok(retried > 0, 'faults were met and retried');
        assert.equal(backend.stats.retries, retried, 'every retry is counted in a result, deletes included');
      } finally {
        await catalog.close();
        await backend.close();
      }
    });
  }

  it('injected every kind of fault', () => {
    assert.ok(proxy.injected.reset > 0 && proxy.injected['503'] > 0 && proxy.injected.stall > 0, JSON.stringify(proxy.injected));
  });

  it('gives up after a bounded number of tries on a server that keeps failing', async () => {
    const server = new URL(swiftServer().url);
    const always = await startFaultProxy({ host: server.hostname, port: Number(server.port) }, { every: 1, maxFaults: 1000, faults: ['503'] });
    const backend = new RetryBackend(s3Backend(uniqueName('down'), { endpoint: always.url }), { ...FAST_RETRY, attempts: 3 });
    try {
      await assert.rejects(backend.get('any', 'thing'), (err: Error) => {
        assert.ok(err instanceof TransientBackendError, err.message);
        assert.match(err.message, /gave up after 3 attempts/);
        return true;
      });
      assert.equal(backend.stats.retries, 2);
    } finally {
      await always.close();
      await backend.close();
    }
  });

  it('fails at once, without retrying, on wrong credentials', async () => {
    const backend = new RetryBackend(swiftBackend(uniqueName('auth'), { password: 'wrong' }), FAST_RETRY);
    await assert.rejects(backend.ensureContainer('x'), (err: Error) => {
      assert.ok(err instanceof BackendError, err.message);
      assert.match(err.message, /access denied \(HTTP 401\)/);
      assert.doesNotMatch(err.message, /wrong/);
      return true;
    });
    assert.equal(backend.stats.retries, 0);
  });
});

describe('objects given in pieces, and ranges, through faults', () => {
  for (const name of ['swift', 's3'] as const) {
    it(`${name}: a putPieces whose PUT is reset and a readRange answered 503 are tried again`, async () => {
      const container = uniqueName(`pieces-${name}`);
      const server = new URL(swiftServer().url);
      let puts = 0;
      let gets = 0;
      const decide: FaultProxyOptions['decide'] = (r) => (!r.path.includes('/pieces') ? undefined
        : r.method === 'PUT' && ++puts === 1 ? 'reset' : r.method === 'GET' && ++gets === 1 ? '503' : undefined);
      const proxy = await startFaultProxy({ host: server.hostname, port: Number(server.port) }, { decide });
      const backend = new RetryBackend(name === 'swift' ? swiftBackend(container, { authUrl: `${proxy.url}/auth/v1.0` }) : s3Backend(container, { endpoint: proxy.url }), FAST_RETRY);
      try {
        await backend.ensureContainer(container);
        const parts = [randomBytes(1), randomBytes(3 << 20), randomBytes(4097)];
        const whole = Buffer.concat(parts);
        await backend.putPieces(container, 'pieces', { length: whole.length, pieces: () => parts });
        const r = await backend.readRange(container, 'pieces', 1 << 20, 10);
        assert.deepEqual({ bytes: r.bytes, size: r.size }, { bytes: whole.subarray(1 << 20, (1 << 20) + 10), size: whole.length });
        assert.ok((await backend.get(container, 'pieces')).equals(whole));
        assert.deepEqual([proxy.injected.reset, proxy.injected['503'], backend.stats.retries], [1, 1, 2]);
      } finally {
        await proxy.close();
        await backend.close();
      }
    });
  }
});

describe('what an object store answers is checked, and its faults retried call by call', () => {
  const tmp = scratch('answers');
  after(() => tmp.cleanup());

  interface Stores { bucket: string; store: RetryBackend; proxy: FaultProxy; backend: RetryBackend; catalog: SqliteCatalog }
  /** A fresh bucket reached directly (`store`) and through a fault proxy (`backend`), and a catalog; all closed after `fn`. */
  async function withStores(label: string, proxyOpts: FaultProxyOptions, fn: (s: Stores) => Promise<void>,
    backendOpts: { pageSize?: number; requestTimeoutMs?: number } = {}, policy: Partial<RetryPolicy> = FAST_RETRY): Promise<void> {
    const bucket = uniqueName(label);
    const store = new RetryBackend(s3Backend(bucket), FAST_RETRY);
    await store.ensureContainer(bucket);
    const server = new URL(swiftServer().url);
    const proxy = await startFaultProxy({ host: server.hostname, port: Number(server.port) }, proxyOpts);
    const backend = new RetryBackend(s3Backend(bucket, { endpoint: proxy.url, ...backendOpts }), policy);
    const catalog = new SqliteCatalog(path.join(tmp.dir, `${label}.db`));
    try {
      await fn({ bucket, store, proxy, backend, catalog });
    } finally {
      await proxy.close();
      await backend.close();
      await store.close();
      await catalog.close();
    }
  }
  /** Object names whose request path ends with this data object's number. */
  const object = (n: string) => new RegExp(`-${n}(\\?|$)`);

  it('an S3 PUT answered without a digest of the data as its ETag fails: whatever answered stored nothing', async () => {
    const decide: FaultProxyOptions['decide'] = (r) =>
      (r.method !== 'PUT' ? undefined : r.path.includes('/none') ? 'no-etag' : r.path.includes('/odd') ? 'odd-etag' : undefined);
    await withStores('no-etag', { decide }, async ({ bucket, proxy, backend }) => {
      for (const [name, etag] of [['none', '\\(none\\)'], ['odd', '64b8f3a1-d']]) {
        await assert.rejects(backend.put(bucket, name!, randomBytes(1000)), (err: Error) => err instanceof BackendError &&
          new RegExp(`^s3 PUT .*/${name}: the server answered ETag ${etag}, not a digest of the data such as its MD5 [0-9a-f]{32}$`).test(err.message));
      }
      assert.equal(proxy.injected['no-etag'] + proxy.injected['odd-etag'], 2);
      await backend.put(bucket, 'real', randomBytes(1000)); // a real answer passes
    });
  });

  it('idle connections the server closed unnoticed are dropped after the first of them fails', async () => {
    let closedWhileIdle = false;
    await withStores('stale', { resetReused: () => closedWhileIdle }, async ({ bucket, store, backend }) => {
      await store.put(bucket, 'obj', Buffer.from('data'));
      // Many connections in the pool, then the server drops them all while they are idle.
      await Promise.all(Array.from({ length: 10 }, () => backend.get(bucket, 'obj')));
      closedWhileIdle = true;
      assert.equal((await backend.get(bucket, 'obj')).toString(), 'data');
      assert.equal(backend.stats.retries, 1, 'one failure on a dead connection, then a fresh one');
    }, {}, { attempts: 3, baseDelayMs: 1, maxDelayMs: 5, totalMs: 10_000 });
  });

  it('a listing of many pages resumes after a fault where it stopped', async () => {
    let lists = 0;
    // Every third page fails: a listing restarted whole would never get past its third page.
    const decide: FaultProxyOptions['decide'] = (r) => (r.method === 'GET' && r.path.includes('list-type=2') && ++lists % 3 === 0 ? '503' : undefined);
    await withStores('pages', { decide }, async ({ bucket, store, proxy, backend }) => {
      const names = Array.from({ length: 40 }, (_, i) => `p-${String(i).padStart(3, '0')}`);
      await Promise.all(names.map((n) => store.put(bucket, n, Buffer.from(n))));
      const seen: string[] = [];
      for await (const n of backend.list(bucket, 'p-')) seen.push(n);
      assert.deepEqual(seen, names);
      assert.ok(proxy.injected['503'] >= 3, JSON.stringify(proxy.injected));
      assert.equal(backend.stats.retries, proxy.injected['503']);
    }, { pageSize: 4 });
  });

  it('a Swift PUT whose data was damaged on the way fails, saying so', async () => {
    const container = uniqueName('damaged');
    const server = new URL(swiftServer().url);
    const proxy = await startFaultProxy({ host: server.hostname, port: Number(server.port) },
      { decide: (r) => (r.method === 'PUT' && r.path.endsWith('/obj') ? 'corrupt' : undefined) });
    const backend = new RetryBackend(swiftBackend(container, { authUrl: `${proxy.url}/auth/v1.0` }), FAST_RETRY);
    try {
      await backend.ensureContainer(container);
      await assert.rejects(backend.put(container, 'obj', randomBytes(1000)), (err: Error) =>
        err instanceof BackendError && /obj: the data Swift received does not match its MD5: HTTP 422$/.test(err.message));
      assert.equal(proxy.injected.corrupt, 1);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  it('a request that timed out is tried again, even when the timeout took longer than the time allowed for retries', async () => {
    // The request timeout is far beyond the retry time bound (300 ms), and far above what a
    // loaded test machine takes to answer the second try.
    let gets = 0;
    const decide: FaultProxyOptions['decide'] = (r) => (r.method === 'GET' && r.path.includes('/slow') && ++gets === 1 ? 'stall' : undefined);
    await withStores('timeout', { decide }, async ({ bucket, store, backend }) => {
      const data = randomBytes(5000);
      await store.put(bucket, 'slow', data);
      assert.ok((await backend.get(bucket, 'slow')).equals(data));
      assert.equal(backend.stats.retries, 1);
    }, { requestTimeoutMs: 3000 }, { attempts: 4, baseDelayMs: 20, maxDelayMs: 100, totalMs: 300 });
  });

  it('a data object gone after the listing (lost, quarantined) is an integrity failure naming it', async () => {
    const decide: FaultProxyOptions['decide'] = (r) => (r.method === 'GET' && object('00002').test(r.path) ? '404' : undefined);
    await withStores('gone', { decide }, async ({ bucket, store, backend, catalog }) => {
      const file = path.join(tmp.dir, 'gone.img');
      writeFileSync(file, randomBytes(300_000));
      const source = await openSource(file);
      const b = await runBackup({ backend: store, catalog, source, volumeId: 'gone', container: bucket, chunkSize: 64 * 1024, shaBlockSize: 4096, threads: 1 });
      await source.close();
      await catalog.update(b.id, { repository: backend.url }); // the same store, reached through the proxy
      await assert.rejects(restoreBackup({ backend, catalog, backupId: b.id, threads: 1 }), (err: Error) =>
        err instanceof IntegrityError && new RegExp(`object \\S+-00002 \\(offset 65536\\) listed in its metadata is missing from container ${bucket}$`).test(err.message));
    });
  });

  it('a cancel does not wait for a write the store sits on: it gets its moment, then the backup stops', { timeout: 120_000 }, async () => {
    // The store never answers one PUT, and the client would wait an hour for it: a backup that waited
    // for its writes before looking at the cancel hangs here (the test's own timeout fails it).
    // The cancel comes once the store sits on that PUT.
    const cancel = new AbortController();
    const decide: FaultProxyOptions['decide'] = (r) => {
      if (r.method !== 'PUT' || !object('00003').test(r.path)) return undefined;
      setImmediate(() => cancel.abort(new CancelledError('cancelled by SIGTERM')));
      return 'stall';
    };
    await withStores('sits-on', { decide }, async ({ bucket, store, proxy, backend, catalog }) => {
      const file = path.join(tmp.dir, 'sits-on.img');
      writeFileSync(file, randomBytes(6 * 64 * 1024));
      const source = await openSource(file);
      try {
        await assert.rejects(runBackup({ backend, catalog, source, volumeId: 'sits-on', container: bucket, chunkSize: 64 * 1024, shaBlockSize: 4096, threads: 1, backupId: 'sits-on-1', signal: cancel.signal }),
          /cancelled by SIGTERM/);
      } finally {
        await source.close();
      }
      assert.equal(proxy.injected.stall, 1);
      const left: string[] = [];
      for await (const n of store.list(bucket, '')) left.push(n);
      assert.deepEqual(left, []);
      assert.equal((await catalog.get('sits-on-1'))!.status, 'error');
    }, { requestTimeoutMs: 3_600_000 });
  });

  it('writes in flight when a backup fails may still land: they finish first, and the clean-up removes them', async () => {
    // Object 2 reaches the server late; object 3 is refused, which fails the backup meanwhile.
    const decide: FaultProxyOptions['decide'] = (r) =>
      (r.method !== 'PUT' ? undefined : object('00002').test(r.path) ? 'delay' : object('00003').test(r.path) ? '404' : undefined);
    await withStores('in-flight', { delayMs: 1500, decide }, async ({ bucket, store, proxy, backend, catalog }) => {
      const file = path.join(tmp.dir, 'in-flight.img');
      writeFileSync(file, randomBytes(5 * 64 * 1024));
      const source = await openSource(file);
      try {
        await assert.rejects(runBackup({ backend, catalog, source, volumeId: 'in-flight', container: bucket, chunkSize: 64 * 1024, shaBlockSize: 4096, threads: 1, backupId: 'in-flight-1' }),
          /-00003/);
      } finally {
        await source.close();
      }
      assert.equal(proxy.injected.delay, 1);
      await new Promise((r) => setTimeout(r, 2500)); // past the delay: whatever was going to land has landed
      const left: string[] = [];
      for await (const n of store.list(bucket, '')) left.push(n);
      assert.deepEqual(left, []);
      assert.equal((await catalog.get('in-flight-1'))!.status, 'error');
    });
  });
});
