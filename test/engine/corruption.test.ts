/**
 * Damage of every kind is caught by restore and verify with an error naming backup,
 * object and (where it applies) offset; no target file is left behind.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { deflateSync } from 'node:zlib';
import { existsSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { restoreBackup } from '../../src/engine/restore.js';
import { ChunkvaultError, ConflictError, IntegrityError, NotFoundError } from '../../src/errors.js';
import * as zstd from 'zstd-napi';
import { makeRepo, mixedVolume, type Repo } from '../support/engine-helpers.js';

describe('corrupted repositories are refused, by restore and by verify', () => {
  let repo: Repo;
  let fullId = '';
  let incrId = '';
  let fullDir = '';
  let incrDir = '';
  let saved = new Map<string, Buffer>();
  const v1 = mixedVolume(700 * 1024);
  const v2 = Buffer.from(v1);
  v2.fill(0x5a, 300 * 1024, 340 * 1024);

  before(async () => {
    repo = makeRepo('corruption');
    fullId = (await repo.backup(repo.file('v1.img', v1), { compression: 'zstd' })).id;
    incrId = (await repo.backup(repo.file('v2.img', v2), { incremental: true, compression: 'none' })).id;
    const dir = (id: string) => path.join(repo.dir, 'repo', id.slice(0, 2), id.slice(2, 4), id);
    fullDir = dir(fullId);
    incrDir = dir(incrId);
    for (const d of [fullDir, incrDir]) for (const f of readdirSync(d)) saved.set(path.join(d, f), readFileSync(path.join(d, f)));
  });
  beforeEach(() => {
    // every case starts from the intact repository
    for (const d of [fullDir, incrDir]) for (const f of readdirSync(d)) if (!saved.has(path.join(d, f))) rmSync(path.join(d, f));
    for (const [f, data] of saved) writeFileSync(f, data);
  });
  after(() => repo.close());

  const file = (dir: string, suffix: string) => path.join(dir, readdirSync(dir).find((f) => f.endsWith(suffix))!);
  const target = () => path.join(repo.dir, 'out.img');

  async function refused(id: string, kind: new (...a: never[]) => ChunkvaultError, pattern: RegExp) {
    for (const t of [target(), undefined]) {
      await assert.rejects(restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target: t, threads: 1 }), (err: Error) => {
        assert.ok(err instanceof kind, `${err.name}: ${err.message}`);
        assert.match(err.message, pattern);
        return true;
      });
      assert.equal(existsSync(target()), false, 'no target file left');
      assert.deepEqual(readdirSync(repo.dir).filter((f) => f.includes('chunkvault-tmp')), []);
    }
  }

  it('restores the intact chain (the baseline the other cases damage)', async () => {
    const r = await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: incrId, target: target(), threads: 1 });
    assert.ok(readFileSync(target()).equals(v2));
    assert.equal(r.chain.length, 2);
    rmSync(target());
  });

  it('a flipped byte in a none-compressed object (MD5)', async () => {
    const f = file(incrDir, '-00001');
    const d = readFileSync(f);
    d[100] ^= 1;
    writeFileSync(f, d);
    await refused(incrId, IntegrityError, new RegExp(`object .*-00001 of backup ${incrId} \\(offset \\d+\\): MD5`));
  });

  it('a flipped byte in a zstd object', async () => {
    const f = file(fullDir, '-00002');
    const d = readFileSync(f);
    d[d.length >> 1] ^= 0x40;
    writeFileSync(f, d);
    await refused(fullId, IntegrityError, new RegExp(`object .*-00002 of backup ${fullId}`));
  });

  it('a zstd object that decompresses to less, or to more, than its metadata length', async () => {
    const f = file(fullDir, '-00002');
    writeFileSync(f, zstd.compress(Buffer.alloc(1000, 7)));
    await refused(fullId, IntegrityError, new RegExp(`object .*-00002 of backup ${fullId} \\(offset \\d+\\): length 1000, metadata says 65536`));
    writeFileSync(f, zstd.compress(Buffer.alloc(65536 + 1, 7)));
    await refused(fullId, IntegrityError, new RegExp(`object .*-00002 of backup ${fullId} \\(offset \\d+\\): cannot decompress zstd data`));
  });

  it('a data object replaced by a valid object of zeros (recognised without decompressing, still checked)', async () => {
    writeFileSync(file(fullDir, '-00002'), zstd.compress(Buffer.alloc(65536), { compressionLevel: 3 }));
    await refused(fullId, IntegrityError, new RegExp(`object .*-00002 of backup ${fullId} \\(offset \\d+\\): MD5 [0-9a-f]{32} does not match metadata`));
  });

  it('a truncated object', async () => {
    truncateSync(file(incrDir, '-00001'), 1000);
    await refused(incrId, IntegrityError, /-00001 of backup .*length 1000, metadata says/);
  });

  it('a missing object', async () => {
    rmSync(file(fullDir, '-00003'));
    await refused(incrId, IntegrityError, new RegExp(`backup ${fullId}: object .*-00003 \\(offset 131072\\) listed in its metadata is missing`));
  });

  it('an extra object with the backup\'s prefix', async () => {
    const f = file(fullDir, '-00001');
    writeFileSync(f.replace(/-00001$/, '-00099'), 'stray');
    await refused(fullId, IntegrityError, /-00099 .* has the backup's prefix but is not in its metadata/);
  });

  it('bad JSON in _metadata', async () => {
    writeFileSync(file(fullDir, '_metadata'), '{"version": "1.0.0", ');
    await refused(fullId, IntegrityError, /_metadata: not valid JSON/);
  });

  it('an unknown format version', async () => {
    const f = file(fullDir, '_metadata');
    writeFileSync(f, readFileSync(f, 'utf8').replace('"version": "1.0.0"', '"version": "2.0.0"'));
    await refused(fullId, IntegrityError, /No support to restore backup version 2\.0\.0/);
  });

  it('an unknown compression label', async () => {
    const f = file(fullDir, '_metadata');
    writeFileSync(f, readFileSync(f, 'utf8').replace('"compression": "zstd"', '"compression": "lzma"'));
    await refused(fullId, IntegrityError, /unsupported compression algorithm: lzma/);
  });

  it('a missing _sha256file', async () => {
    rmSync(file(incrDir, '_sha256file'));
    await refused(incrId, IntegrityError, /sha256file .* is missing/);
  });

  it('an edited hash in _sha256file (SHA-256 of a block, at its offset)', async () => {
    const f = file(incrDir, '_sha256file');
    const doc = JSON.parse(readFileSync(f, 'utf8'));
    doc.sha256s[5] = '0'.repeat(64);
    writeFileSync(f, JSON.stringify(doc));
    await refused(incrId, IntegrityError, new RegExp(`block at volume offset ${5 * 4096} .*SHA-256`));
  });

  it('a parent missing from the catalog', async () => {
    await repo.catalog.update(incrId, { parent_id: 'f0000000-0000-4000-8000-00000000dead' });
    try {
      await refused(incrId, NotFoundError, /f0000000-0000-4000-8000-00000000dead, an ancestor of/);
    } finally {
      await repo.catalog.update(incrId, { parent_id: fullId });
    }
  });

  it('a cycle in the chain', async () => {
    await repo.catalog.update(fullId, { parent_id: incrId });
    try {
      await refused(incrId, IntegrityError, /has a cycle/);
    } finally {
      await repo.catalog.update(fullId, { parent_id: null });
    }
  });

  it('a backup that is not available', async () => {
    await repo.catalog.update(fullId, { status: 'error' });
    try {
      await refused(incrId, ConflictError, new RegExp(`backup ${fullId} is error, not available`));
    } finally {
      await repo.catalog.update(fullId, { status: 'available' });
    }
  });
});

/** bzip2 as Python writes it (the encoder chunkvault uses must stay inside worker threads). */
const bz2Compress = (data: Buffer): Buffer =>
  execFileSync('python3', ['-c', 'import bz2,sys; sys.stdout.buffer.write(bz2.compress(sys.stdin.buffer.read()))'], { input: data });

describe('damaged zlib and bz2 objects are refused', () => {
  for (const compression of ['zlib', 'bz2']) {
    it(`${compression}: a flipped byte, and a stream longer than the metadata says`, async () => {
      const repo = makeRepo(`corruption-${compression}`);
      try {
        const v = mixedVolume(300 * 1024);
        const id = (await repo.backup(repo.file('v.img', v), { compression })).id;
        const dir = path.join(repo.dir, 'repo', id.slice(0, 2), id.slice(2, 4), id);
        const f = path.join(dir, readdirSync(dir).find((n) => n.endsWith('-00002'))!);
        const intact = readFileSync(f);
        const target = path.join(repo.dir, 'out.img');
        const restore = () => restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target, threads: 1 });
        await restore();
        assert.ok(readFileSync(target).equals(v), 'the intact backup restores');
        rmSync(target);

        const flipped = Buffer.from(intact);
        flipped[flipped.length >> 1] ^= 0x40;
        writeFileSync(f, flipped);
        await assert.rejects(restore(), (err: Error) =>
          err instanceof IntegrityError && new RegExp(`object .*-00002 of backup ${id}`).test(err.message));

        // the object replaced by a valid stream of a whole chunk and one byte more
        const longer = Buffer.alloc(64 * 1024 + 1, 0x33);
        writeFileSync(f, compression === 'zlib' ? deflateSync(longer) : bz2Compress(longer));
        await assert.rejects(restore(), (err: Error) =>
          err instanceof IntegrityError && new RegExp(`object .*-00002 of backup ${id} \\(offset \\d+\\): (length 65537, metadata says 65536|cannot decompress)`).test(err.message));
        assert.equal(existsSync(target), false, 'no target file left');
      } finally {
        await repo.close();
      }
    });
  }
});
