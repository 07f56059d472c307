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
