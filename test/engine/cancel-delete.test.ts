/** Cancellation (signal, delete by another process), failures midway, and delete's safeguards. */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { Backend, ObjectPieces } from '../../src/backends/backend.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { runBackup } from '../../src/engine/backup.js';
import { deleteBackup } from '../../src/engine/delete.js';
import { openSource } from '../../src/engine/source.js';
import { BackendError, CancelledError, ConflictError, VolumeIOError } from '../../src/errors.js';
import { makeRepo, mixedVolume, pseudoRandom, SMALL, type Repo } from '../support/engine-helpers.js';
import { waitFor } from '../support/wait.js';

/** A source that yields `chunks` pieces slowly, so a backup stays in flight. */
async function* slowly(chunks: number, size: number) {
  for (let i = 0; i < chunks; i++) {
    await sleep(25);
    yield pseudoRandom(size, i + 1);
  }
}

describe('cancellation, failures and delete', () => {
  let repo: Repo;
  before(() => {
    repo = makeRepo('cancel');
  });
  after(() => repo.close());

  const objectsOf = (container: string) => {
    try {
      return readdirSync(path.join(repo.dir, 'repo', container));
    } catch {
      return [];
    }
  };
  /** Until backup `id` is being written and has stored objects (a cancel then has something to clean up). */
  const storing = (id: string) => waitFor(`backup ${id} to store objects`, async () => {
    const rec = await repo.catalog.get(id);
    return rec?.status === 'creating' && rec.container !== null && objectsOf(rec.container).length > 0;
  });

  it('a backup aborted through its signal leaves no object and an error record', async () => {
    const ac = new AbortController();
    const source = await openSource('-', Readable.from(slowly(400, 16 * 1024)));
    const running = runBackup({ backend: repo.backend, catalog: repo.catalog, source, volumeId: 'abort', ...SMALL, signal: ac.signal, backupId: 'a0000000-0000-4000-8000-000000000001' });
    running.catch(() => {});
    await storing('a0000000-0000-4000-8000-000000000001');
    ac.abort(new CancelledError('cancelled by SIGINT'));
    await assert.rejects(running, (err: Error) => err instanceof CancelledError && /cancelled by SIGINT/.test(err.message));
    const rec = (await repo.catalog.get('a0000000-0000-4000-8000-000000000001'))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /cancelled by SIGINT/);
    assert.deepEqual(objectsOf(rec.container!), []);
  });

  it('a cancel that comes while the backup is being set up stops it too: no object, an error record', async () => {
    const ac = new AbortController();
    // The signal (a SIGTERM) lands while the repository is checked, before the backup is recorded.
    const cancelling: Backend = Object.create(repo.backend, {
      ensureContainer: {
        value: async (c: string, o?: object) => {
          await repo.backend.ensureContainer(c, o);
          ac.abort(new CancelledError('cancelled by SIGTERM'));
        },
      },
    });
    const source = await openSource(repo.file('early-cancel.img', mixedVolume(640 * 1024, 4)));
    const id = 'a0000000-0000-4000-8000-000000000007';
    try {
      await assert.rejects(runBackup({ backend: cancelling, catalog: repo.catalog, source, volumeId: 'early-cancel', ...SMALL, signal: ac.signal, backupId: id }),
        (err: Error) => err instanceof CancelledError && /cancelled by SIGTERM/.test(err.message));
    } finally {
      await source.close();
    }
    const rec = (await repo.catalog.get(id))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /cancelled by SIGTERM/);
    assert.deepEqual(objectsOf(rec.container!), []);
  });

  /** A backup of a slow stream in flight (objects stored, more to come), and the catalog as another process sees it. */
  async function inFlight(id: string, volumeId: string) {
    const other = new SqliteCatalog(path.join(repo.dir, 'catalog.db'));
    const source = await openSource('-', Readable.from(slowly(400, 16 * 1024)));
    const running = runBackup({ backend: repo.backend, catalog: repo.catalog, source, volumeId, ...SMALL, backupId: id, cancelPollMs: 50 });
    running.catch(() => {});
    await storing(id);
    return { other, running };
  }

  it('delete of a backup another writer is still writing stops the writer, which cleans up', async () => {
    const id = 'a0000000-0000-4000-8000-000000000002';
    const { other, running } = await inFlight(id, 'deleted-while-running');
    try {
      assert.equal((await other.get(id))!.status, 'creating');
      const r = await deleteBackup({ backend: repo.backend, catalog: other, backupId: id, waitMs: 30_000 });
      assert.equal(r.cancelledRunning, true);
      await assert.rejects(running, (err: Error) => err instanceof CancelledError && /deleted while it was being written/.test(err.message));
      const rec = (await other.get(id))!;
      assert.equal(rec.status, 'deleted');
      assert.deepEqual(objectsOf(rec.container!), []);
    } finally {
      await other.close();
    }
  });

  it('a writer whose backup another process gave up on (marked error) stops, and never commits it', async () => {
    const id = 'a0000000-0000-4000-8000-000000000010';
    const { other, running } = await inFlight(id, 'given-up');
    try {
      // What a service does for a worker whose lease ran out.
      assert.ok(await other.update(id, { status: 'error', fail_reason: 'lease expired: the worker stopped renewing it' }, ['creating']));
      await assert.rejects(running, (err: Error) => err instanceof CancelledError &&
        err.message === `backup ${id} was marked error by another process while it was being written (lease expired: the worker stopped renewing it)`);
      const rec = (await other.get(id))!;
      assert.equal(rec.status, 'error');
      assert.equal(rec.fail_reason, 'lease expired: the worker stopped renewing it', 'the other process\'s reason stays');
      assert.deepEqual(objectsOf(rec.container!), []);
    } finally {
      await other.close();
    }
  });

  it('the latest backup of a volume is the one started last, even within one second', async () => {
    // Records queued in one order (a service's requests), started in the other.
    const file = repo.file('order.img', mixedVolume(100 * 1024, 3));
    const base = { id: '', volume_id: 'order', parent_id: null, repository: repo.backend.url, container: null, service_metadata: null,
      status: 'creating' as const, fail_reason: null, size: 0, volume_bytes: null, object_count: 0, stored_bytes: null, display_name: null,
      display_description: null, availability_zone: null, host: null, service: null, compression: null, chunk_size: null,
      sha_block_size: null, source: null, worker: null, created_at: new Date().toISOString(), data_timestamp: null };
    await repo.catalog.create({ ...base, id: 'order-queued-first' });
    await repo.catalog.create({ ...base, id: 'order-queued-second' });
    for (const id of ['order-queued-second', 'order-queued-first']) {
      await repo.backup(file, { volumeId: 'order', backupId: id, recordExists: true, timestamp: undefined });
    }
    const incr = await repo.backup(file, { volumeId: 'order', incremental: true });
    const [a, b] = [await repo.catalog.get('order-queued-second'), await repo.catalog.get('order-queued-first')];
    assert.ok(a!.created_at < b!.created_at, `${a!.created_at} < ${b!.created_at}`);
    assert.equal(incr.parentId, 'order-queued-first');
  });

  it('a backup whose sha256file cannot be written leaves no _metadata and no data objects', async () => {
    const failing: Backend = Object.create(repo.backend, {
      putPieces: {
        value: (c: string, n: string, d: ObjectPieces, o?: object) =>
          n.endsWith('_sha256file') ? Promise.reject(new BackendError(`disk full writing ${n}`, { object: n })) : repo.backend.putPieces(c, n, d, o),
      },
    });
    const source = await openSource(repo.file('fail-sha.img', mixedVolume(640 * 1024)));
    const id = 'a0000000-0000-4000-8000-000000000013';
    await assert.rejects(runBackup({ backend: failing, catalog: repo.catalog, source, volumeId: 'fails-sha', ...SMALL, backupId: id }), /disk full writing .*_sha256file/);
    await source.close();
    const rec = (await repo.catalog.get(id))!;
    assert.equal(rec.status, 'error');
    assert.deepEqual(objectsOf(rec.container!), []);
  });

  it('a backup whose storage fails midway leaves no _metadata and no data objects', async () => {
    let puts = 0;
    const failing: Backend = Object.create(repo.backend, {
      put: {
        value: (c: string, n: string, d: Uint8Array, o?: object) =>
          ++puts === 4 ? Promise.reject(new BackendError(`disk full writing ${n}`, { object: n })) : repo.backend.put(c, n, d, o),
      },
    });
    const source = await openSource(repo.file('fail.img', mixedVolume(640 * 1024)));
    const id = 'a0000000-0000-4000-8000-000000000003';
    await assert.rejects(runBackup({ backend: failing, catalog: repo.catalog, source, volumeId: 'fails', ...SMALL, backupId: id }), /disk full/);
    await source.close();
    const rec = (await repo.catalog.get(id))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /disk full/);
    assert.deepEqual(objectsOf(rec.container!), []);
  });

  it('a backup whose store fails every write once full (several failing at once) fails cleanly and leaves nothing', async () => {
    let puts = 0;
    const full: Backend = Object.create(repo.backend, {
      put: {
        value: async (c: string, n: string, d: Uint8Array, o?: object) => {
          if (++puts < 3) return repo.backend.put(c, n, d, o);
          // The first failure stops the backup while later writes are still out; they fail after.
          if (puts > 3) await new Promise((r) => setTimeout(r, 100));
          throw new BackendError(`cannot write ${n}: ENOSPC: no space left on device`, { object: n });
        },
      },
    });
    const source = await openSource(repo.file('full.img', mixedVolume(2 * 1024 * 1024, 3)));
    const id = 'a0000000-0000-4000-8000-000000000006';
    await assert.rejects(runBackup({ backend: full, catalog: repo.catalog, source, volumeId: 'store-full', ...SMALL, backupId: id, threads: 2 }), /ENOSPC/);
    await source.close();
    const rec = (await repo.catalog.get(id))!;
    assert.equal(rec.status, 'error');
    assert.deepEqual(objectsOf(rec.container!), []);
  });

  it('a backup whose source fails midway names the source and the offset, and leaves no objects', async () => {
    async function* breaks() {
      yield pseudoRandom(100_000, 1);
      yield pseudoRandom(50_000, 2);
      throw new Error('EIO: i/o error, read');
    }
    const source = await openSource('-', Readable.from(breaks()));
    const id = 'a0000000-0000-4000-8000-000000000005';
    await assert.rejects(runBackup({ backend: repo.backend, catalog: repo.catalog, source, volumeId: 'source-fails', ...SMALL, backupId: id }),
      (err: Error) => err instanceof VolumeIOError && err.message === '-: cannot read at offset 150000: EIO: i/o error, read');
    const rec = (await repo.catalog.get(id))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /cannot read at offset 150000/);
    assert.deepEqual(objectsOf(rec.container!), []);
  });

  it('delete refuses while an incremental depends on the backup, removes _metadata first, tolerates missing objects', async () => {
    const f = repo.file('dep.img', mixedVolume(300 * 1024));
    const full = await repo.backup(f, { volumeId: 'dep' });
    const incr = await repo.backup(f, { volumeId: 'dep', incremental: true });
    await assert.rejects(deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: full.id }), (err: Error) =>
      err instanceof ConflictError && err.message.includes(`has 1 dependent incremental backup: ${incr.id} (available); delete it first`));
    assert.equal((await repo.catalog.get(full.id))!.status, 'available');
    // A failed incremental still depends on it (as in Cinder); the refusal says which, and why it counts.
    await repo.catalog.update(incr.id, { status: 'error' });
    await assert.rejects(deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: full.id }), (err: Error) =>
      err instanceof ConflictError && err.message.includes(`: ${incr.id} (error); delete it first`));
    await repo.catalog.update(incr.id, { status: 'available' });

    const order: string[] = [];
    const recording: Backend = Object.create(repo.backend, {
      delete: { value: (c: string, n: string, o?: object) => (order.push(n), repo.backend.delete(c, n, o)) },
    });
    await deleteBackup({ backend: recording, catalog: repo.catalog, backupId: incr.id });
    assert.equal(order[0], `${incr.prefix}_metadata`);
    order.length = 0;
    const victim = objectsOf(full.container).find((n) => n.endsWith('-00002'))!;
    await repo.backend.delete(full.container, victim);
    const r = await deleteBackup({ backend: recording, catalog: repo.catalog, backupId: full.id });
    assert.equal(order[0], `${full.prefix}_metadata`);
    assert.equal(r.objectsDeleted, 6);
    assert.equal(r.retries, 0, 'a directory never needs a retry');
    assert.deepEqual(objectsOf(full.container), []);
    assert.equal((await repo.catalog.get(full.id))!.status, 'deleted');
  });
  it('a delete cancelled once its _metadata is gone leaves the backup `error`, and a second delete finishes it', async () => {
    const f = repo.file('interrupted-delete.img', mixedVolume(300 * 1024, 7));
    const b = await repo.backup(f, { volumeId: 'interrupted-delete' });
    const stop = new AbortController();
    const cancelling: Backend = Object.create(repo.backend, {
      delete: {
        value: async (c: string, n: string, o?: object) => {
          await repo.backend.delete(c, n, o);
          if (n.endsWith('_metadata')) stop.abort();
        },
      },
    });
    await assert.rejects(deleteBackup({ backend: cancelling, catalog: repo.catalog, backupId: b.id, signal: stop.signal }));
    const rec = (await repo.catalog.get(b.id))!;
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason!, /delete interrupted after its _metadata was removed/);
    assert.ok(objectsOf(b.container).length > 0, 'data objects are left for the second delete');
    await deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: b.id });
    assert.equal((await repo.catalog.get(b.id))!.status, 'deleted');
    assert.deepEqual(objectsOf(b.container), []);
  });
});
