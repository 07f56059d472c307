/**
 * One suite for every Backend: each implementation must pass these cases unchanged.
 * `make(container)` opens a backend whose objects live in a fresh container;
 * `paged(container)` the same with a small listing page, so that pagination really runs.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import type { Backend, ObjectPieces } from '../../src/backends/backend.js';
import { NotFoundError } from '../../src/errors.js';

export interface ConformanceTarget {
  name: string;
  make(container: string): Backend | Promise<Backend>;
  paged(container: string, pageSize: number): Backend | Promise<Backend>;
  /** A container name that has never been created. */
  fresh(label: string): string;
}

async function names(b: Backend, container: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const n of b.list(container, prefix)) out.push(n);
  return out.sort();
}

const sha = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');

/** `parts` as an object given in pieces; `length` is their total unless given. */
const piecesOf = (parts: Uint8Array[], length = parts.reduce((n, p) => n + p.length, 0)): ObjectPieces => ({ length, pieces: () => parts });

export function backendConformance(t: ConformanceTarget): void {
  describe(`Backend conformance: ${t.name}`, () => {
    const opened: Backend[] = [];
    const open = async (container: string) => {
      const b = await t.make(container);
      opened.push(b);
      await b.ensureContainer(container);
      return b;
    };
    after(async () => {
      for (const b of opened) await b.close();
    });

    it('round-trips objects, including empty ones, and overwrites', async () => {
      const c = t.fresh('roundtrip');
      const b = await open(c);
      const data = randomBytes(100_003);
      await b.put(c, 'volume_x_backup_y-00001', data);
      assert.ok((await b.get(c, 'volume_x_backup_y-00001')).equals(data));
      await b.put(c, 'empty', new Uint8Array(0));
      assert.equal((await b.get(c, 'empty')).length, 0);
      const newer = randomBytes(17);
      await b.put(c, 'volume_x_backup_y-00001', newer);
      assert.ok((await b.get(c, 'volume_x_backup_y-00001')).equals(newer));
      assert.deepEqual(await names(b, c, ''), ['empty', 'volume_x_backup_y-00001']);
    });

    it('stores a large object (64 MiB + 1) intact', async () => {
      const c = t.fresh('large');
      const b = await open(c);
      const data = Buffer.alloc(64 * 1024 * 1024 + 1);
      for (let off = 0; off < data.length; off += 1 << 20) randomBytes(4096).copy(data, off);
      await b.put(c, 'big', data);
      const back = await b.get(c, 'big');
      assert.equal(back.length, data.length);
      assert.equal(sha(back), sha(data));
      const pieces = Array.from({ length: Math.ceil(data.length / (7 << 20)) }, (_, i) => data.subarray(i * (7 << 20), (i + 1) * (7 << 20)));
      await b.putPieces(c, 'big-pieces', piecesOf(pieces));
      assert.equal(sha(await b.get(c, 'big-pieces')), sha(data));
      const across = await b.readRange(c, 'big-pieces', (7 << 20) - 5, 1 << 20);
      assert.equal(across.size, data.length);
      assert.ok(across.bytes.equals(data.subarray((7 << 20) - 5, (8 << 20) - 5)));
    });

    it('stores an object given in pieces of odd sizes as put stores it', async () => {
      const c = t.fresh('pieces');
      const b = await open(c);
      const parts = [randomBytes(1), randomBytes(100_000), randomBytes(4097)];
      const whole = Buffer.concat(parts);
      await b.putPieces(c, 'volume_x_backup_y_sha256file', piecesOf(parts));
      await b.put(c, 'whole', whole);
      assert.ok((await b.get(c, 'volume_x_backup_y_sha256file')).equals(whole));
      assert.ok((await b.get(c, 'whole')).equals(whole));
      assert.deepEqual(await names(b, c, ''), ['volume_x_backup_y_sha256file', 'whole']);
    });

    it('replaces an object with one given in pieces, shorter or longer', async () => {
      const c = t.fresh('pieces-replace');
      const b = await open(c);
      await b.put(c, 'x', randomBytes(200_000));
      const shorter = [randomBytes(10), randomBytes(5000)];
      await b.putPieces(c, 'x', piecesOf(shorter));
      assert.ok((await b.get(c, 'x')).equals(Buffer.concat(shorter)));
      const longer = [randomBytes(300_000), randomBytes(3)];
      await b.putPieces(c, 'x', piecesOf(longer));
      assert.ok((await b.get(c, 'x')).equals(Buffer.concat(longer)));
    });

    it('refuses pieces that do not add up to the length, leaving what was stored', async () => {
      const c = t.fresh('pieces-length');
      const b = await open(c);
      const old = randomBytes(5000);
      await b.put(c, 'x', old);
      const parts = [randomBytes(100), randomBytes(4000)];
      for (const length of [4099, 4101, 0]) {
        await assert.rejects(b.putPieces(c, 'x', piecesOf(parts, length)), /4100 bytes/, `length ${length}`);
        await assert.rejects(b.putPieces(c, 'new', piecesOf(parts, length)), /4100 bytes/, `length ${length}`);
      }
      assert.ok((await b.get(c, 'x')).equals(old));
      assert.equal(await b.exists(c, 'new'), false);
      assert.deepEqual(await names(b, c, ''), ['x']);
    });

    it('stores pieces that are views of shared memory', async () => {
      const c = t.fresh('pieces-shared');
      const b = await open(c);
      const shared = new Uint8Array(new SharedArrayBuffer(70_001));
      shared.set(randomBytes(shared.length));
      const want = Buffer.from(shared);
      await b.putPieces(c, 'x', piecesOf([shared.subarray(0, 4096), shared.subarray(4096, 65_536), shared.subarray(65_536)]));
      assert.ok((await b.get(c, 'x')).equals(want));
    });

    it('stores an empty object given in no pieces', async () => {
      const c = t.fresh('pieces-empty');
      const b = await open(c);
      await b.putPieces(c, 'empty', piecesOf([]));
      assert.equal((await b.get(c, 'empty')).length, 0);
      assert.equal(await b.exists(c, 'empty'), true);
    });

    it('reads ranges of an object, and tells its size', async () => {
      const c = t.fresh('range');
      const b = await open(c);
      const data = randomBytes(10_000);
      await b.put(c, 'x', data);
      await b.put(c, 'empty', new Uint8Array(0));
      const cases: [string, number, number, Buffer][] = [
        ['at the start', 0, 100, data.subarray(0, 100)],
        ['in the middle', 4095, 4098, data.subarray(4095, 8193)],
        ['the whole object', 0, 10_000, data],
        ['one byte, the last', 9999, 1, data.subarray(9999)],
        ['across the end (short)', 9990, 100, data.subarray(9990)],
        ['exactly at the end', 10_000, 5, Buffer.alloc(0)],
        ['past the end', 20_000, 5, Buffer.alloc(0)],
        ['of length 0', 5, 0, Buffer.alloc(0)],
      ];
      for (const [what, offset, length, want] of cases) {
        const r = await b.readRange(c, 'x', offset, length);
        assert.ok(r.bytes.equals(want), `${what}: ${r.bytes.length} bytes`);
        assert.equal(r.size, 10_000, what);
      }
      for (const [offset, length] of [[0, 10], [0, 0], [3, 1]] as const) {
        const r = await b.readRange(c, 'empty', offset, length);
        assert.deepEqual([r.bytes.length, r.size], [0, 0], `empty object at ${offset}, ${length} bytes`);
      }
    });

    it('rejects a range of a missing object with NotFoundError naming it', async () => {
      const c = t.fresh('range-notfound');
      const b = await open(c);
      for (const length of [10, 0]) {
        await assert.rejects(b.readRange(c, 'no-such-object', 0, length), (err: Error) => {
          assert.ok(err instanceof NotFoundError, `${err.name}: ${err.message}`);
          assert.equal((err as NotFoundError).context.object, 'no-such-object');
          return true;
        });
      }
    });

    it('lists thousands of names by prefix, each once, across pages', async () => {
      const c = t.fresh('listing');
      const b = await open(c);
      const paged = await t.paged(c, 100);
      opened.push(paged);
      const want: string[] = [];
      const queue = Array.from({ length: 2500 }, (_, i) => `volume_v/20240101000000/az_nova_backup_b-${String(i + 1).padStart(5, '0')}`);
      want.push(...queue);
      await Promise.all(Array.from({ length: 16 }, async () => {
        for (let n = queue.pop(); n !== undefined; n = queue.pop()) await b.put(c, n, Buffer.from(n));
      }));
      await b.put(c, 'volume_v/20240101000000/az_nova_backup_other-00001', Buffer.from('x'));
      await b.put(c, 'unrelated', Buffer.from('x'));
      const prefix = 'volume_v/20240101000000/az_nova_backup_b';
      assert.deepEqual(await names(b, c, prefix), want.sort());
      assert.deepEqual(await names(paged, c, prefix), want.sort());
      assert.equal((await names(paged, c, '')).length, 2502);
      assert.deepEqual(await names(b, c, 'volume_v/'), [...want, 'volume_v/20240101000000/az_nova_backup_other-00001'].sort());
    });

    it('keeps names with "/" as they are', async () => {
      const c = t.fresh('slashes');
      const b = await open(c);
      await b.put(c, 'a/b/c_metadata', Buffer.from('1'));
      await b.put(c, 'a/b-00001', Buffer.from('2'));
      assert.deepEqual(await names(b, c, 'a/'), ['a/b-00001', 'a/b/c_metadata']);
      assert.deepEqual(await names(b, c, 'a/b/'), ['a/b/c_metadata']);
      assert.equal((await b.get(c, 'a/b/c_metadata')).toString(), '1');
    });

    it('lists in ascending byte order, and resumes after a given name', async () => {
      const c = t.fresh('order');
      const b = await open(c);
      const want = ['p-a', 'p.a', 'p/a', 'p/b/c', 'p0', 'q', 'r\u00e9', 'r\uff21'];
      for (const n of [...want].reverse()) await b.put(c, n, Buffer.from(n));
      const listed = async (after?: string) => {
        const out: string[] = [];
        for await (const n of b.list(c, '', { after })) out.push(n);
        return out;
      };
      assert.deepEqual(await listed(), want);
      assert.deepEqual(await listed('p.a'), want.slice(2));
      assert.deepEqual(await listed('p/b/c'), want.slice(4));
    });

    it('lists nothing in a missing container; ensureContainer is idempotent', async () => {
      const c = t.fresh('missing');
      const b = await t.make(c);
      opened.push(b);
      assert.deepEqual(await names(b, c, ''), []);
      await b.ensureContainer(c);
      await b.ensureContainer(c);
      assert.deepEqual(await names(b, c, ''), []);
    });

    it('deletes, and a missing object is no error to delete', async () => {
      const c = t.fresh('delete');
      const b = await open(c);
      await b.put(c, 'x', Buffer.from('x'));
      await b.delete(c, 'x');
      await b.delete(c, 'x');
      await b.delete(c, 'never-was');
      assert.deepEqual(await names(b, c, ''), []);
    });

    it('rejects a get of a missing object with NotFoundError naming container and object', async () => {
      const c = t.fresh('notfound');
      const b = await open(c);
      await assert.rejects(b.get(c, 'no-such-object'), (err: Error) => {
        assert.ok(err instanceof NotFoundError, `${err.name}: ${err.message}`);
        assert.match(err.message, /no-such-object/);
        assert.equal((err as NotFoundError).context.object, 'no-such-object');
        return true;
      });
    });

    it('tells whether an object exists, in a missing container too', async () => {
      const c = t.fresh('exists');
      const b = await open(c);
      await b.put(c, 'volume_x_backup_y_sha256file', Buffer.from('{}'));
      await b.put(c, 'dir/empty', new Uint8Array(0));
      assert.equal(await b.exists(c, 'volume_x_backup_y_sha256file'), true);
      assert.equal(await b.exists(c, 'dir/empty'), true);
      assert.equal(await b.exists(c, 'volume_x_backup_y_metadata'), false);
      assert.equal(await b.exists(c, 'volume_x_backup_y'), false, 'a prefix of a name is no object');
      assert.equal(await b.exists(c, 'dir/empty/more'), false);
      await b.delete(c, 'dir/empty');
      assert.equal(await b.exists(c, 'dir/empty'), false);
      assert.equal(await b.exists(t.fresh('exists-missing'), 'x'), false);
    });

    it('takes concurrent writers of distinct objects', async () => {
      const c = t.fresh('concurrent');
      const writers = await Promise.all([open(c), open(c), open(c)]);
      const blobs = Array.from({ length: 24 }, (_, i) => [`obj-${i}`, randomBytes(50_000 + i)] as const);
      await Promise.all(blobs.map(([n, d], i) => writers[i % 3]!.put(c, n, d)));
      for (const [n, d] of blobs) assert.ok((await writers[0]!.get(c, n)).equals(d), n);
      assert.equal((await names(writers[1]!, c, 'obj-')).length, blobs.length);
    });

    it('honours an aborted signal', async () => {
      const c = t.fresh('abort');
      const b = await open(c);
      const ac = new AbortController();
      ac.abort(new Error('stop'));
      await assert.rejects(b.put(c, 'x', Buffer.from('x'), { signal: ac.signal }));
      await assert.rejects(b.putPieces(c, 'x', piecesOf([Buffer.from('x')]), { signal: ac.signal }));
      await assert.rejects(b.get(c, 'x', { signal: ac.signal }));
      assert.deepEqual(await names(b, c, ''), []);
      await b.put(c, 'y', Buffer.from('y'));
      await assert.rejects(b.readRange(c, 'y', 0, 1, { signal: ac.signal }), /stop/);
      await assert.rejects(b.readRange(c, 'y', 0, 0, { signal: ac.signal }), /stop/);
    });
  });
}
