/** One suite for every Catalog implementation. `make()` returns an empty catalog. */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Catalog, NewBackupRecord } from '../../src/catalog/catalog.js';
import { ConflictError, NotFoundError } from '../../src/errors.js';

export function record(id: string, over: Partial<NewBackupRecord> = {}): NewBackupRecord {
  return {
    id, volume_id: 'vol-1', parent_id: null, repository: 'file:///repo', container: 'c', service_metadata: `p_${id}`,
    status: 'available', fail_reason: null, size: 1, volume_bytes: 1000, object_count: 1, stored_bytes: 10,
    display_name: 'n', display_description: null, availability_zone: 'nova', host: 'h', service: 's', compression: 'zstd',
    chunk_size: 65536, sha_block_size: 4096, source: '/dev/x', worker: null, created_at: '2024-01-01T00:00:00.000Z',
    data_timestamp: null, ...over,
  };
}

export function catalogConformance(name: string, make: () => Promise<Catalog>): void {
  describe(`Catalog conformance: ${name}`, () => {
    const open: Catalog[] = [];
    const fresh = async () => {
      const c = await make();
      open.push(c);
      return c;
    };
    after(async () => {
      for (const c of open) await c.close();
    });

    it('creates, reads back every field, and refuses a duplicate id', async () => {
      const c = await fresh();
      const r = record('b1', { display_description: 'été "quoted"', volume_bytes: 5_000_000_000_000 });
      const got = await c.create(r);
      assert.deepEqual({ ...got, updated_at: null }, { ...r, updated_at: null, deleted_at: null, num_dependent_backups: 0 });
      assert.deepEqual(await c.get('b1'), got);
      assert.equal(await c.get('nope'), undefined);
      await assert.rejects(c.create(r), ConflictError);
    });

    it('updates with compare-and-set on the status', async () => {
      const c = await fresh();
      await c.create(record('b1', { status: 'creating' }));
      assert.equal(await c.update('b1', { status: 'deleting' }, ['available']), false);
      assert.equal((await c.get('b1'))!.status, 'creating');
      assert.equal(await c.update('b1', { status: 'deleting', fail_reason: 'x' }, ['creating', 'error']), true);
      const rec = (await c.get('b1'))!;
      assert.equal(rec.status, 'deleting');
      assert.equal(rec.fail_reason, 'x');
      assert.ok(rec.updated_at);
      assert.equal(await c.update('missing', { status: 'error' }), false);
      // ... and on the worker too, null included.
      assert.equal(await c.update('b1', { worker: 'h:2' }, ['deleting'], 'h:1'), false);
      assert.equal(await c.update('b1', { worker: 'h:1' }, ['deleting'], null), true);
      assert.equal(await c.update('b1', { worker: 'h:1 h:2' }, ['deleting'], null), false);
      assert.equal(await c.update('b1', { worker: 'h:1 h:2' }, ['deleting'], 'h:1'), true);
      assert.equal((await c.get('b1'))!.worker, 'h:1 h:2');
    });

    it('lists with filters, oldest first, deleted hidden unless asked', async () => {
      const c = await fresh();
      await c.create(record('b3', { created_at: '2024-01-03T00:00:00.000Z' }));
      await c.create(record('b1', { created_at: '2024-01-01T00:00:00.000Z' }));
      await c.create(record('b2', { created_at: '2024-01-02T00:00:00.000Z', volume_id: 'vol-2', status: 'error' }));
      await c.create(record('b4', { created_at: '2024-01-04T00:00:00.000Z', status: 'deleted', repository: 's3://x' }));
      assert.deepEqual((await c.list()).map((r) => r.id), ['b1', 'b2', 'b3']);
      assert.deepEqual((await c.list({ includeDeleted: true })).map((r) => r.id), ['b1', 'b2', 'b3', 'b4']);
      assert.deepEqual((await c.list({ volumeId: 'vol-1' })).map((r) => r.id), ['b1', 'b3']);
      assert.deepEqual((await c.list({ status: 'error' })).map((r) => r.id), ['b2']);
      assert.deepEqual((await c.list({ status: 'deleted' })).map((r) => r.id), ['b4']);
      assert.deepEqual((await c.list({ repository: 'file:///repo' })).map((r) => r.id), ['b1', 'b2', 'b3']);
    });

    it('pages through a list with a marker and a limit, ties in creation order, and filters by name', async () => {
      const c = await fresh();
      const same = '2024-01-01T00:00:00.000Z';
      for (const id of ['z', 'a', 'm', 'b']) await c.create(record(id, { created_at: same, display_name: id === 'm' ? 'mid' : 'n' }));
      await c.update('z', { status: 'error' }); // an update must not move a record in the order
      assert.deepEqual((await c.list()).map((r) => r.id), ['z', 'a', 'm', 'b']);
      assert.deepEqual((await c.list({ limit: 2 })).map((r) => r.id), ['z', 'a']);
      assert.deepEqual((await c.list({ marker: 'a', limit: 1 })).map((r) => r.id), ['m']);
      assert.deepEqual((await c.list({ marker: 'b' })).map((r) => r.id), []);
      assert.deepEqual((await c.list({ name: 'mid' })).map((r) => r.id), ['m']);
      await assert.rejects(c.list({ marker: 'nope' }), NotFoundError);
    });

    it('derives num_dependent_backups from children that are not deleted', async () => {
      const c = await fresh();
      await c.create(record('p'));
      await c.create(record('c1', { parent_id: 'p' }));
      await c.create(record('c2', { parent_id: 'p' }));
      assert.equal((await c.get('p'))!.num_dependent_backups, 2);
      await c.update('c1', { status: 'deleted' });
      assert.equal((await c.get('p'))!.num_dependent_backups, 1);
      assert.equal((await c.list()).find((r) => r.id === 'p')!.num_dependent_backups, 1);
      await c.purge('c2');
      assert.equal((await c.get('p'))!.num_dependent_backups, 0);
      assert.equal(await c.get('c2'), undefined);
    });
  });
}
