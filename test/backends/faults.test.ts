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
import { RetryBackend } from '../../src/backends/retry.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { runBackup } from '../../src/engine/backup.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { openSource } from '../../src/engine/source.js';
import { BackendError, TransientBackendError } from '../../src/errors.js';
import { scratch } from '../support/cinder-fixtures.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
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
        assert.ok(full.retries + incr.retries + r.retries > 0, 'faults were met and retried');
        assert.equal(backend.stats.retries, full.retries + incr.retries + r.retries);
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
