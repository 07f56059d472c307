/** Backup and restore round trips: sizes, growth, shrinkage, streams, sparseness, chains. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, constants as fsc, openSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import { after, before, describe, it } from 'node:test';
import type { Backend, ObjectPieces } from '../../src/backends/backend.js';
import { runBackup } from '../../src/engine/backup.js';
import { locate, readMetadata, readSha256File } from '../../src/engine/repository.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { openSource } from '../../src/engine/source.js';
import { renewedIfBroken, WorkerPool } from '../../src/engine/worker-pool.js';
import { ConflictError, IntegrityError, InvalidInputError } from '../../src/errors.js';
import { makeRepo, mixedVolume, pseudoRandom, sha256, SMALL, threadCount, type Repo } from '../support/engine-helpers.js';

describe('backup/restore round trips', () => {
  let repo: Repo;
  let n = 0;
  before(() => {
    repo = makeRepo('roundtrip');
  });
  after(() => repo.close());

  async function restore(id: string, opts: { toExisting?: boolean; target?: string } = {}): Promise<Buffer> {
    const target = opts.target ?? path.join(repo.dir, `out-${n++}.img`);
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target, threads: 1, ...opts });
    return readFileSync(target);
  }

  /** Backs up each version in turn as one chain and checks every restore. */
  async function chain(volumeId: string, versions: Buffer[], opts = {}) {
    const ids: string[] = [];
    for (const [i, v] of versions.entries()) {
      const r = await repo.backup(repo.file(`${volumeId}-${i}.img`, v), { volumeId, incremental: i > 0, ...opts });
      assert.equal(r.kind, i > 0 ? 'incremental' : 'full');
      assert.equal(r.bytes, v.length);
      ids.push(r.id);
    }
    for (const [i, id] of ids.entries()) assert.ok((await restore(id)).equals(versions[i]!), `version ${i}`);
    return ids;
  }

  for (const size of [1, 4095, 4096, 4097, 64 * 1024, 64 * 1024 + 1, 3 * 64 * 1024 - 7]) {
    it(`a volume of ${size} bytes`, async () => {
      const v = pseudoRandom(size, size);
      const w = Buffer.from(v);
      w[size - 1] ^= 0xff;
      await chain(`odd-${size}`, [v, w]);
    });
  }

  for (const compression of ['zstd', 'zlib']) {
    it(`chunks too large for reused output buffers (64 MiB), ${compression}: compressed, raw and zero extents`, async () => {
      // 3 MiB: compressible and random stretches, zeros; the incremental stores all three kinds.
      const v = mixedVolume(3 * 1024 * 1024);
      v.fill(0, 2 * 1024 * 1024, 2 * 1024 * 1024 + 256 * 1024);
      const w = Buffer.from(v);
      pseudoRandom(40_960, 3).copy(w, 4096); // whole blocks of random data: stored raw
      w.fill(0x41, 1_500_000, 1_600_000);
      w.fill(0, 2_949_120, 2_949_120 + 65_536); // random data zeroed: an all-zero extent
      const ids = await chain(`large-chunks-${compression}`, [v, w], { chunkSize: 64 * 1024 * 1024, compression });
      const labels = new Set<string>();
      for (const id of ids) {
        const dir = path.join(repo.dir, 'repo', id.slice(0, 2), id.slice(2, 4), id);
        const meta = JSON.parse(readFileSync(path.join(dir, readdirSync(dir).find((f) => f.endsWith('_metadata'))!), 'utf8'));
        for (const o of meta.objects) for (const k of Object.keys(o)) labels.add(o[k].compression);
      }
      assert.deepEqual([...labels].sort(), ['none', compression].sort(), 'both compressed and raw objects were written');
    });
  }

  it('a chain of several incrementals, each restoring its own state', async () => {
    const versions = [mixedVolume(600 * 1024)];
    for (let i = 1; i < 5; i++) {
      const next = Buffer.from(versions[i - 1]!);
      pseudoRandom(5000 * i, i).copy(next, (i * 97_000) % (next.length - 30_000));
      versions.push(next);
    }
    await chain('long-chain', versions);
  });

  it('a volume that grew (within its last block, and by several chunks) and shrank', async () => {
    const base = mixedVolume(300 * 1024 + 1000);
    const grewTail = Buffer.concat([base, pseudoRandom(500, 1)]);
    const grewMuch = Buffer.concat([grewTail, pseudoRandom(200 * 1024, 2)]);
    const shrank = grewMuch.subarray(0, 150 * 1024 + 3);
    const regrew = Buffer.concat([shrank, Buffer.alloc(100 * 1024)]);
    await chain('grow-shrink', [base, grewTail, grewMuch, shrank, regrew]);
  });

  it('an incremental against a parent of many blocks stores exactly the changed runs of blocks', { timeout: 120_000 }, async () => {
    const bs = 512;
    const chunkSize = 64 * 1024;
    const v1 = mixedVolume(24 * 1024 * 1024 + 300); // 49153 blocks, the last one partial
    const v2 = Buffer.concat([v1, pseudoRandom(700, 9)]); // grown: its old last block changes, two are new
    v2[0] ^= 1;
    pseudoRandom(3 * bs, 5).copy(v2, 1000 * bs);
    pseudoRandom(4 * bs, 6).copy(v2, 254 * bs); // across a chunk boundary: two runs
    v2[20001 * bs - 1] ^= 0x80; // the last byte of a block
    v2.fill(0, 30_000 * bs, 30_010 * bs); // data or zeros made zeros
    v2.fill(7, 40_000 * bs + 3, 40_000 * bs + 4); // one byte in what may be zeros
    // The changed runs as Cinder finds them: blocks whose SHA-256 differs from the parent's
    // at the same index (or that the parent has not), runs cut at chunk boundaries.
    const blockHashes = (v: Buffer) => Array.from({ length: Math.ceil(v.length / bs) }, (_, i) => sha256(v.subarray(i * bs, (i + 1) * bs)));
    const before = blockHashes(v1);
    const expected: { offset: number; length: number }[] = [];
    blockHashes(v2).forEach((h, i) => {
      if (h === before[i]) return;
      const last = expected.at(-1);
      const offset = i * bs;
      const length = Math.min(bs, v2.length - offset);
      if (last && last.offset + last.length === offset && offset % chunkSize !== 0) last.length += length;
      else expected.push({ offset, length });
    });
    assert.equal(expected.length, 8);

    const opts = { volumeId: 'many-blocks', shaBlockSize: bs, chunkSize, threads: 2 };
    await repo.backup(repo.file('many-blocks-0.img', v1), opts);
    const r = await repo.backup(repo.file('many-blocks-1.img', v2), { ...opts, incremental: true });
    const meta = await readMetadata(repo.backend, locate((await repo.catalog.get(r.id))!));
    assert.deepEqual(meta.objects.map(({ offset, length }) => ({ offset, length })), expected);
    const sha = await readSha256File(repo.backend, locate((await repo.catalog.get(r.id))!));
    assert.deepEqual(Array.from({ length: sha.sha256s.length }, (_, i) => sha.sha256s.hexAt(i)), blockHashes(v2));
    assert.ok((await restore(r.id)).equals(v2));
  });

  it('an unchanged volume gives an incremental without objects', async () => {
    const v = mixedVolume(200 * 1024);
    const [, id] = await chain('unchanged', [v, v]);
    assert.equal((await repo.catalog.get(id!))!.object_count, 0);
  });

  it('an all-zero volume, restored as a hole', async () => {
    const v = Buffer.alloc(512 * 1024);
    const [id] = await chain('zeros', [v]);
    const target = path.join(repo.dir, 'zeros.img');
    await restore(id!, { target });
    assert.equal(statSync(target).size, v.length);
    assert.equal(statSync(target).blocks, 0);
  });

  it('a stream of unknown size (stdin)', async () => {
    const v = mixedVolume(333 * 1024 + 5);
    const pieces = [v.subarray(0, 1000), v.subarray(1000, 70_000), v.subarray(70_000)];
    const source = await openSource('-', Readable.from(pieces));
    const r = await runBackup({ backend: repo.backend, catalog: repo.catalog, source, volumeId: 'stdin', ...SMALL });
    assert.equal(r.bytes, v.length);
    assert.ok((await restore(r.id)).equals(v));
  });

  it('sparse output, and zeroed data between full and incremental comes back zero', async () => {
    const v1 = Buffer.concat([pseudoRandom(256 * 1024, 3), Buffer.alloc(256 * 1024), pseudoRandom(128 * 1024, 4)]);
    const v2 = Buffer.from(v1);
    v2.fill(0, 0, 200 * 1024); // data erased after the full backup
    const [, id] = await chain('sparse', [v1, v2]);
    const target = path.join(repo.dir, 'sparse.img');
    const out = await restore(id!, { target });
    assert.ok(out.subarray(0, 200 * 1024).equals(Buffer.alloc(200 * 1024)));
    const allocated = statSync(target).blocks * 512;
    assert.ok(allocated <= v2.length - 400 * 1024, `only data is allocated (${allocated} of ${v2.length})`);
  });

  it('--to-existing overwrites a file full of garbage in place', async () => {
    const v = Buffer.concat([mixedVolume(100 * 1024), Buffer.alloc(100 * 1024)]);
    const [id] = await chain('existing', [v]);
    const garbage = pseudoRandom(300 * 1024, 9);
    const target = repo.file('garbage.img', garbage);
    const after = await restore(id!, { target, toExisting: true });
    assert.ok(after.subarray(0, v.length).equals(v));
    assert.ok(after.subarray(v.length).equals(garbage.subarray(v.length)), 'in place: bytes past the volume stay');
  });

  it('--to-existing writes the zeros of all-zero objects restored into reused buffers', async () => {
    // 12 data chunks, then 4 zero chunks: more objects than buffers in flight, so the zero
    // objects land in buffers that held data; a new (sparse) file and an existing one.
    const v = Buffer.concat([pseudoRandom(12 * 64 * 1024, 21), Buffer.alloc(4 * 64 * 1024)]);
    const [id] = await chain('zero-objects', [v]);
    const target = repo.file('garbage-zero.img', pseudoRandom(v.length, 22));
    assert.ok((await restore(id!, { target, toExisting: true })).equals(v));
  });

  it('backs up a block device and restores into another one in place', async (t) => {
    // Real block devices: loop devices over two image files (the suite runs as root).
    const attach = (file: string) => {
      const r = spawnSync('losetup', ['--find', '--show', file], { encoding: 'utf8' });
      assert.equal(r.status, 0, `attaching a loop device for this test needs root: ${r.stderr}`);
      const dev = r.stdout.trim();
      t.after(() => spawnSync('losetup', ['--detach', dev]));
      return dev;
    };
    const v = Buffer.concat([mixedVolume(3 * 1024 * 1024 - 64 * 1024), Buffer.alloc(64 * 1024)]);
    const from = attach(repo.file('device-a.img', v));
    const to = attach(repo.file('device-b.img', pseudoRandom(v.length, 77)));
    const b = await repo.backup(from, { volumeId: 'device', chunkSize: 1024 * 1024 });
    assert.equal(b.bytes, v.length);
    await assert.rejects(restore(b.id, { target: to }), /exists \(use --to-existing to write into it\)/);
    // A device someone holds exclusively (a mounted filesystem, another restore) is refused, untouched.
    const holder = openSync(to, fsc.O_RDONLY | fsc.O_EXCL);
    try {
      await assert.rejects(restore(b.id, { target: to, toExisting: true }), (err: Error) =>
        err instanceof ConflictError && err.message === `${to} is in use (mounted, or opened exclusively by another process such as a restore)`);
    } finally {
      closeSync(holder);
    }
    assert.ok(readFileSync(repo.file('device-b.img')).equals(pseudoRandom(v.length, 77)), 'the held device was not written');
    const restored = await restore(b.id, { target: to, toExisting: true });
    assert.ok(restored.equals(v), 'the device holds the volume, zeros included');
  });

  /** Restores `id` into a stream and returns every byte written to it. */
  async function restoreToStream(id: string, opts: { threads?: number; inFlightBytes?: number } = {}): Promise<Buffer> {
    const stream = new PassThrough();
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target: 'stream', stream, threads: 1, ...opts });
    assert.equal(stream.listenerCount('error'), 0, 'the restore no longer listens to the stream it was given');
    return Buffer.concat(parts);
  }

  /** Three versions whose changes nest: objects of the full backup and of the first incremental are split. */
  function nestedVersions(): Buffer[] {
    const v0 = Buffer.concat([mixedVolume(400 * 1024), Buffer.alloc(128 * 1024), pseudoRandom(100 * 1024 + 123, 4)]);
    const v1 = Buffer.from(v0);
    pseudoRandom(40_000, 5).copy(v1, 70_000); // the middle of the full backup's second object
    v1.fill(0, 450_000, 460_000);
    const v2 = Buffer.from(v1);
    pseudoRandom(5_000, 6).copy(v2, 90_000); // the middle of the first incremental's object
    pseudoRandom(3_000, 7).copy(v2, 600_000);
    return [v0, v1, v2];
  }

  it('restores a chain to a stream: every byte in order, zeros included, whatever the order objects finish in', { timeout: 60_000 }, async () => {
    const versions = nestedVersions();
    const ids = await chain('to-stream', versions);
    for (const [i, id] of ids.entries()) {
      for (const threads of [1, 3]) assert.ok((await restoreToStream(id, { threads })).equals(versions[i]!), `version ${i}, ${threads} thread(s)`);
    }
    // Objects bigger than the memory for objects in flight: one at a time, each still written in order.
    assert.ok((await restoreToStream(ids[0]!, { inFlightBytes: 1 })).equals(versions[0]!));
    // Memory for one object in flight by the usual measure, but three are open at once (a hang if
    // the object holding the next bytes could not get a buffer).
    assert.ok((await restoreToStream(ids[2]!, { inFlightBytes: 3 * 64 * 1024 })).equals(versions[2]!));
  });

  it('a failed check while streaming stops the stream with the error, and gives the backup back', async () => {
    const versions = nestedVersions();
    const ids = await chain('stream-damaged', versions);
    const rec = (await repo.catalog.get(ids[0]!))!;
    const object = path.join(repo.dir, 'repo', rec.container!, `${rec.service_metadata}-00001`);
    const bytes = readFileSync(object);
    bytes[bytes.length >> 1]! ^= 0xff;
    writeFileSync(object, bytes);
    for (const threads of [1, 3]) {
      // The first object fails its check while later pieces wait for its bytes: they must not wait forever.
      await assert.rejects(restoreToStream(ids[2]!, { threads }), (err: Error) => err instanceof IntegrityError);
      assert.equal((await repo.catalog.get(ids[2]!))!.status, 'available');
    }
  });

  it('streams a chain whose split objects would not fit the memory for objects in flight by reading them again', async () => {
    const versions = nestedVersions();
    const ids = await chain('stream-memory', versions);
    // The newest backup holds up to three objects of 64 KiB open at once (full, first incremental,
    // second): with memory for two, each split object is read once per stretch of its blocks.
    const stream = new PassThrough();
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    const r = await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: ids[2]!, target: 'stream', stream, threads: 1, inFlightBytes: 150 * 1024 });
    assert.ok(Buffer.concat(parts).equals(versions[2]!));
    const held = await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: ids[2]!, target: 'stream', stream: new PassThrough().resume(), threads: 1 });
    assert.ok(r.objectsRead > held.objectsRead, `split objects were read again (${r.objectsRead} reads, ${held.objectsRead} when held)`);
  });

  it('refuses to stream a chain whose split objects would be read too many times, before writing', async () => {
    // One object for the whole volume, and an incremental that changes ten separate blocks of it.
    const v0 = mixedVolume(256 * 1024, 31);
    const v1 = Buffer.from(v0);
    for (let i = 0; i < 10; i++) pseudoRandom(100, 40 + i).copy(v1, 10_000 + i * 24_000);
    const ids = await chain('stream-rereads', [v0, v1], { chunkSize: 256 * 1024 });
    const stream = new PassThrough();
    let written = 0;
    stream.on('data', (d: Buffer) => (written += d.length));
    await assert.rejects(
      restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: ids[1]!, target: 'stream', stream, threads: 1, inFlightBytes: 300 * 1024 }),
      (err: Error) => err instanceof InvalidInputError && /would hold 2 objects of up to 262144 bytes at once, or read \d+ bytes of objects for a 262144-byte volume/.test(err.message),
    );
    assert.equal(written, 0);
    // A file needs no such memory: the same budget restores it.
    const target = path.join(repo.dir, `out-${n++}.img`);
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: ids[1]!, target, threads: 1, inFlightBytes: 300 * 1024 });
    assert.ok(readFileSync(target).equals(v1));
  });

  it('refuses to overwrite an existing target unless asked, and leaves it alone', async () => {
    const [id] = await chain('no-clobber', [mixedVolume(50 * 1024)]);
    const target = repo.file('keep.img', Buffer.from('precious'));
    const threads = threadCount();
    await assert.rejects(restore(id!, { target }), /exists \(use --to-existing/);
    assert.equal(readFileSync(target, 'utf8'), 'precious');
    assert.equal(threadCount(), threads, 'the worker threads of the refused restore are gone');
  });

  it('names objects <prefix>-00001... in offset order and commits data, then _sha256file, then _metadata', async () => {
    const order: string[] = [];
    const recording: Backend = Object.create(repo.backend, {
      put: { value: (c: string, name: string, d: Uint8Array, o?: object) => (order.push(name), repo.backend.put(c, name, d, o)) },
      putPieces: { value: (c: string, name: string, d: ObjectPieces, o?: object) => (order.push(name), repo.backend.putPieces(c, name, d, o)) },
    });
    const source = await openSource(repo.file('order.img', mixedVolume(640 * 1024)));
    const r = await runBackup({ backend: recording, catalog: repo.catalog, source, volumeId: 'order', ...SMALL, threads: 2 });
    await source.close();
    assert.equal(order.at(-1), `${r.prefix}_metadata`);
    assert.equal(order.at(-2), `${r.prefix}_sha256file`);
    assert.deepEqual([...order.slice(0, -2)].sort(), Array.from({ length: 10 }, (_, i) => `${r.prefix}-${String(i + 1).padStart(5, '0')}`));
    const meta = JSON.parse(readFileSync(path.join(repo.dir, 'repo', r.container, `${r.prefix}_metadata`), 'utf8'));
    const offsets = meta.objects.map((o: Record<string, { offset: number }>) => Object.values(o)[0]!.offset);
    assert.deepEqual(offsets, Array.from({ length: 10 }, (_, i) => i * 64 * 1024));
    assert.deepEqual(readdirSync(path.join(repo.dir, 'repo', r.container)).length, 12);
  });

  it('refuses a changed sha block size for an incremental, and a chunk size that is not a multiple of it', async () => {
    const f = repo.file('blocks.img', mixedVolume(100 * 1024));
    await repo.backup(f, { volumeId: 'blocks' });
    const threads = threadCount();
    await assert.rejects(repo.backup(f, { volumeId: 'blocks', incremental: true, shaBlockSize: 8192 }), (err: Error) =>
      err instanceof InvalidInputError && /Hash block size has changed since the last backup. New hash block size: 8192. Old hash block size: 4096. Do a full backup./.test(err.message));
    await assert.rejects(repo.backup(f, { volumeId: 'blocks2', chunkSize: 10_000 }), /chunk size 10000 is not a multiple of the sha block size 4096/);
    assert.equal(threadCount(), threads, 'the worker threads of the refused backups are gone');
  });

  it('refuses ids that are not plain names, a parent of another volume and impossible thread counts', async () => {
    const f = repo.file('ids.img', mixedVolume(100 * 1024));
    const threads = threadCount();
    for (const [opts, message] of [
      [{ volumeId: 'a/b' }, /volume id 'a\/b' is not valid/],
      [{ volumeId: '.hidden' }, /volume id '\.hidden' is not valid/],
      [{ volumeId: 'x'.repeat(256) }, /volume id 'x+' is not valid/],
      [{ volumeId: 'ok', backupId: '../escape' }, /backup id '\.\.\/escape' is not valid/],
      [{ volumeId: 'ok', threads: 0 }, /threads must be a whole number from 1 to 256, got 0/],
      [{ volumeId: 'ok', threads: Number.NaN }, /threads must be a whole number from 1 to 256, got NaN/],
    ] as const) {
      await assert.rejects(repo.backup(f, opts), (err: Error) => err instanceof InvalidInputError && message.test(err.message), JSON.stringify(opts));
    }
    const parent = await repo.backup(f, { volumeId: 'ids-a' });
    await assert.rejects(repo.backup(f, { volumeId: 'ids-b', parentId: parent.id }),
      (err: Error) => err instanceof InvalidInputError && err.message === `parent backup ${parent.id} is a backup of volume ids-a, not ids-b`);
    assert.equal((await repo.catalog.list({ volumeId: 'ids-b' })).length, 0, 'nothing recorded');
    assert.equal(threadCount(), threads, 'no worker threads left behind');
  });

  it('a pool whose thread died fails its jobs clearly, and is replaced by a working one', async () => {
    const f = repo.file('pool.img', mixedVolume(200 * 1024, 9));
    const pool = new WorkerPool(1);
    const [slot] = (pool as unknown as { slots: { worker: Worker }[] }).slots;
    slot!.worker.ref(); // the idle pool's threads do not keep the test running
    await once(slot!.worker, 'online');
    const exited = once(slot!.worker, 'exit');
    await slot!.worker.terminate(); // as if the running thread had crashed
    await exited;
    assert.ok(pool.broken);
    await assert.rejects(repo.backup(f, { volumeId: 'pool', pool }), /worker thread exited with code 1/);
    const fresh = await renewedIfBroken(pool);
    assert.notEqual(fresh, pool);
    try {
      assert.equal(await renewedIfBroken(fresh), fresh, 'a working pool is kept');
      const b = await repo.backup(f, { volumeId: 'pool', pool: fresh });
      const out = path.join(repo.dir, 'pool-out.img');
      await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: b.id, target: out, pool: fresh });
      assert.ok(readFileSync(out).equals(readFileSync(f)));
    } finally {
      await fresh.close();
    }
  });

  it('a long run of zeros in large chunks backs up and verifies (each chunk gets its own copy of the cached zeros)', async () => {
    const f = path.join(repo.dir, 'zeros-large.img');
    writeFileSync(f, '');
    truncateSync(f, 1500 * 1024 * 1024); // sparse: twelve all-zero 128 MiB chunks
    const b = await repo.backup(f, { volumeId: 'zeros-large', chunkSize: 128 * 1024 * 1024, shaBlockSize: 32 * 1024, threads: 2 });
    assert.equal(b.objects, 12);
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: b.id, threads: 2 });
  });

  it('every compression label round-trips; incompressible data is stored raw and labelled none', async () => {
    const v = Buffer.concat([pseudoRandom(64 * 1024, 11), Buffer.from('text '.repeat(13108)).subarray(0, 64 * 1024)]);
    for (const compression of ['none', 'zlib', 'gzip', 'bz2', 'bzip2', 'zstd', 'ZSTD', 'off']) {
      const r = await repo.backup(repo.file(`c-${compression}.img`, v), { volumeId: `c-${compression}`, compression });
      const meta = JSON.parse(readFileSync(path.join(repo.dir, 'repo', r.container, `${r.prefix}_metadata`), 'utf8'));
      const labels = meta.objects.map((o: Record<string, { compression: string }>) => Object.values(o)[0]!.compression);
      const lower = compression.toLowerCase();
      assert.deepEqual(labels, ['none', ['none', 'off'].includes(lower) ? 'none' : lower], compression);
      assert.ok((await restore(r.id)).equals(v), compression);
    }
  });
});
