/** A large volume's sha256file is written and read a piece at a time, never whole. */
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Backend } from '../../src/backends/backend.js';
import { IntegrityError } from '../../src/errors.js';
import { locate, readMetadata, readSha256File } from '../../src/engine/repository.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { openStoredHashes } from '../../src/engine/stored-hashes.js';
import { sha256ObjectName } from '../../src/format/naming.js';
import { makeRepo, pseudoRandom, type Repo } from '../support/engine-helpers.js';

/** The backend, refusing to read or write a sha256file whole, counting its pieces. */
function piecewiseOnly(backend: Backend) {
  const seen = { pieces: 0, ranges: 0, read: new Map<string, number[]>() };
  const whole = (name: string) => {
    if (name.endsWith('_sha256file')) throw new Error(`${name} was read or written whole`);
  };
  const view: Backend = Object.create(backend) as Backend;
  Object.assign(view, {
    put: (c: string, name: string, data: Uint8Array, o?: object) => (whole(name), backend.put(c, name, data, o)),
    get: (c: string, name: string, o?: object) => (whole(name), backend.get(c, name, o)),
    putPieces: (c: string, name: string, data: Parameters<Backend['putPieces']>[2], o?: object) => {
      seen.pieces += [...data.pieces()].length;
      return backend.putPieces(c, name, data, o);
    },
    readRange: (c: string, name: string, offset: number, length: number, o?: object) => {
      seen.ranges++;
      seen.read.set(name, [...(seen.read.get(name) ?? []), length]);
      return backend.readRange(c, name, offset, length, o);
    },
  });
  return { backend: view, seen };
}

describe('sha256file in pieces', () => {
  let repo: Repo;
  before(() => {
    repo = makeRepo('sha256file-io');
  });
  after(() => repo.close());

  it('a full backup, an incremental on it and a restore of the chain never hold the sha256file whole', { timeout: 120_000 }, async () => {
    // 256 MiB at 512-byte blocks: 524288 hashes, a 38 MB sha256file, read in three ranges.
    const size = 256 * 1024 * 1024;
    const file = repo.file('big.img');
    const fd = openSync(file, 'w');
    writeSync(fd, pseudoRandom(1 << 20, 1), 0, 1 << 20, 0);
    writeSync(fd, pseudoRandom(4096, 2), 0, 4096, size - 4096);
    closeSync(fd);
    const { backend, seen } = piecewiseOnly(repo.backend);
    const opts = { backend, volumeId: 'big', shaBlockSize: 512, chunkSize: 8 << 20, threads: 2 };
    const full = await repo.backup(file, opts);
    assert.ok(seen.pieces > 4, `${seen.pieces} pieces written`);
    // Changed blocks on both sides of where the parent's list is read in windows (233016 lines
    // of 72 bytes each), and its last block.
    const changed = [[204800, 1], [233015, 2], [466031, 2], [524287, 1]] as const;
    const fd2 = openSync(file, 'r+');
    changed.forEach(([block, n], i) => writeSync(fd2, pseudoRandom(512 * n, 3 + i), 0, 512 * n, block * 512));
    closeSync(fd2);
    const inc = await repo.backup(file, { ...opts, incremental: true });
    assert.equal(inc.parentId, full.id);
    const meta = await readMetadata(repo.backend, locate((await repo.catalog.get(inc.id))!));
    assert.deepEqual(meta.objects.map((o) => [o.offset / 512, o.length / 512]), changed);
    assert.ok(seen.ranges >= 3, `${seen.ranges} ranges read`);
    const rec = (await repo.catalog.get(inc.id))!;
    const sha = await readSha256File(backend, locate(rec));
    assert.equal(sha.sha256s.length, size / 512);
    // Its hashes read a window at a time, in order and out of it, are those of the whole list.
    const stored = await openStoredHashes(backend, locate(rec));
    assert.equal(stored.length, sha.sha256s.length);
    for (const [block, count] of [[0, 10], [233010, 20], [524280, 100], [100, 5], [466000, 64], [233015, 1], [524288, 3]] as const) {
      assert.ok(Buffer.from(await stored.take(block, count)).equals(sha.sha256s.copy(block, block + count)), `[${block}, +${count})`);
    }
    const target = path.join(repo.dir, 'big-out.img');
    seen.read.clear();
    await restoreBackup({ backend, catalog: repo.catalog, backupId: inc.id, target, threads: 2 });
    // Of the parent's sha256file, a restore of the chain reads only its two ends.
    const parentFile = sha256ObjectName(locate((await repo.catalog.get(full.id))!).prefix);
    assert.deepEqual(seen.read.get(parentFile), [64 * 1024, 64 * 1024]);
    assert.ok(seen.read.get(sha256ObjectName(locate(rec).prefix))!.length >= 3);
    assert.ok(readFileSync(target).equals(readFileSync(file)));
  });

  it('a damaged line in a large sha256file stops a restore in place or to a stream before anything is written', { timeout: 120_000 }, async () => {
    // 160 MiB at 512-byte blocks: 327680 lines, in two windows; the damage is in the second.
    const size = 160 << 20;
    const file = repo.file('damaged.img');
    const fd = openSync(file, 'w');
    writeSync(fd, pseudoRandom(1 << 20, 7), 0, 1 << 20, 0);
    writeSync(fd, pseudoRandom(1 << 20, 8), 0, 1 << 20, size - (1 << 20));
    closeSync(fd);
    const r = await repo.backup(file, { volumeId: 'damaged', shaBlockSize: 512, chunkSize: 8 << 20, threads: 2 });
    const loc = locate((await repo.catalog.get(r.id))!);
    const name = sha256ObjectName(loc.prefix);
    const text = await repo.backend.get(loc.container, name);
    // A digit of block 300000: the blocks of the first window would be restored first.
    const at = text.indexOf('\n    "', 0) + 1 + 300_000 * 72 + 10;
    text[at] = 0x67; // 'g'
    await repo.backend.put(loc.container, name, text);
    const damaged = (err: Error) => err instanceof IntegrityError && err.message.includes('sha256s[300000] is not a SHA-256 hex digest');
    const target = repo.file('damaged-target.img', Buffer.alloc(size, 0xee));
    await assert.rejects(restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: r.id, target, toExisting: true, threads: 2 }), damaged);
    assert.ok(readFileSync(target).equals(Buffer.alloc(size, 0xee)), 'the file in place is untouched');
    const stream = new PassThrough();
    let written = 0;
    stream.on('data', (d: Buffer) => (written += d.length));
    await assert.rejects(restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: r.id, target: 'stream', stream, threads: 2 }), damaged);
    assert.equal(written, 0, 'nothing went to the stream');
    // A new file: the restore stops when it reaches the damage, and leaves no file.
    const fresh = path.join(repo.dir, 'damaged-new.img');
    await assert.rejects(restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: r.id, target: fresh, threads: 2 }), damaged);
    assert.equal(existsSync(fresh), false);
  });

  it('a sha256file in another JSON layout is still read (whole), and an incremental builds on it', async () => {
    const v = pseudoRandom(64 * 1024, 4);
    const file = repo.file('other-layout.img', v);
    const full = await repo.backup(file, { volumeId: 'layout' });
    const loc = locate((await repo.catalog.get(full.id))!);
    const name = sha256ObjectName(loc.prefix);
    const doc = JSON.parse((await repo.backend.get(loc.container, name)).toString()) as Record<string, unknown>;
    // A list after the hashes with the member's name in it: the piecewise reader gives this up.
    const other = Buffer.from(JSON.stringify({ ...doc, notes: ['sha256s'] }));
    await repo.backend.put(loc.container, name, other);
    const before = await readSha256File(repo.backend, loc);
    assert.equal(before.sha256s.length, v.length / 4096);
    v.fill(1, 0, 10);
    const inc = await repo.backup(repo.file('other-layout.img', v), { volumeId: 'layout', incremental: true });
    assert.equal(inc.parentId, full.id);
    assert.equal((await repo.catalog.get(inc.id))!.object_count, 1);
  });
});
