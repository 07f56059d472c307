/** chunkvault restores what real Cinder wrote (repo-posix fixtures), byte for byte. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PosixBackend } from '../../src/backends/posix.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { rebuildCatalog } from '../../src/engine/records.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { copyRepository, imageBytes, manifest, scratch } from '../support/cinder-fixtures.js';

const posix = manifest.backups.filter((b) => b.driver === 'posix');

describe('restoring backups written by real Cinder (posix)', () => {
  const tmp = scratch('cinder-restore');
  const backend = new PosixBackend(copyRepository('repo-posix', path.join(tmp.dir, 'repo')));
  const catalog = new SqliteCatalog(path.join(tmp.dir, 'catalog.db'));

  before(async () => {
    const report = await rebuildCatalog(backend, catalog, ['']);
    assert.deepEqual(report.unreadable, []);
    assert.equal(report.added.length, posix.length);
  });
  after(async () => {
    await catalog.close();
    tmp.cleanup();
  });

  it('adopts every backup with Cinder\'s record fields', async () => {
    for (const b of posix) {
      const rec = await catalog.get(b.id);
      assert.ok(rec, b.id);
      assert.equal(rec.container, b.container);
      assert.equal(rec.service_metadata, b.service_metadata);
      assert.equal(rec.parent_id, b.parent_id);
      assert.equal(rec.object_count, b.object_count);
      assert.equal(rec.display_name, b.display_name);
      assert.equal(rec.display_description, b.description);
      assert.equal(rec.volume_bytes, imageBytes(b.source_image).length);
    }
  });

  for (const b of posix) {
    it(`restores ${b.display_name} (${b.compression}${b.parent_id ? ', incremental' : ''}) byte-exactly`, async () => {
      const target = path.join(tmp.dir, `${b.id}.img`);
      const r = await restoreBackup({ backend, catalog, backupId: b.id, target, threads: 1 });
      const digest = createHash('sha256').update(readFileSync(target)).digest('hex');
      assert.equal(digest, b.restored_sha256);
      assert.equal(r.bytes, imageBytes(b.source_image).length);
    });
  }

  it('verifies the whole chain without writing anything', async () => {
    const last = posix.find((b) => b.display_name === 'chain-incr2')!;
    const r = await restoreBackup({ backend, catalog, backupId: last.id, threads: 1 });
    assert.deepEqual(r.chain.length, 3);
    assert.equal(r.target, null);
  });
});

describe('the object-store layout of Cinder\'s S3 and Swift drivers reads with the same format code', () => {
  const tmp = scratch('cinder-objstore-layout');
  after(() => tmp.cleanup());

  for (const repo of ['repo-s3', 'repo-swift']) {
    it(`restores every backup of ${repo} (its files laid out as bucket/key)`, async () => {
      const backend = new PosixBackend(copyRepository(repo, path.join(tmp.dir, repo)));
      const catalog = new SqliteCatalog(path.join(tmp.dir, `${repo}.db`));
      try {
        const backups = manifest.backups.filter((b) => b.repository === repo);
        assert.ok(backups.length >= 2);
        for (const b of backups) {
          await catalog.create({
            id: b.id, volume_id: b.volume_id, parent_id: b.parent_id, repository: backend.url, container: b.container,
            service_metadata: b.service_metadata, status: 'available', fail_reason: null, size: 1, volume_bytes: null,
            object_count: b.object_count, stored_bytes: null, display_name: b.display_name, display_description: null,
            availability_zone: 'nova', host: null, service: null, compression: b.compression, chunk_size: b.chunk_size,
            sha_block_size: b.sha_block_size, source: null, worker: null, created_at: b.created_at, data_timestamp: null,
          });
        }
        for (const b of backups) {
          const target = path.join(tmp.dir, `${b.id}.img`);
          await restoreBackup({ backend, catalog, backupId: b.id, target, threads: 1 });
          assert.equal(createHash('sha256').update(readFileSync(target)).digest('hex'), b.restored_sha256, b.display_name);
        }
      } finally {
        await catalog.close();
      }
    });
  }
});
