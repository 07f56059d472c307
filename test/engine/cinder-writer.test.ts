/**
 * Writer byte-compatibility: given Cinder's ids, timestamp, sizes and compression,
 * chunkvault writes the very files real Cinder wrote (the exact-* fixtures).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { PosixBackend } from '../../src/backends/posix.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { runBackup } from '../../src/engine/backup.js';
import { openSource } from '../../src/engine/source.js';
import { FIXTURES, imageBytes, manifest, scratch } from '../support/cinder-fixtures.js';

const exact = manifest.backups.filter((b) => b.display_name.startsWith('exact-'));

describe('files written for the exact-* fixtures equal Cinder\'s byte for byte', () => {
  const tmp = scratch('cinder-writer');
  const backend = new PosixBackend(path.join(tmp.dir, 'repo'));
  const catalog = new SqliteCatalog(path.join(tmp.dir, 'catalog.db'));
  after(async () => {
    await catalog.close();
    tmp.cleanup();
  });

  it('has fixtures to compare with', () => assert.equal(exact.length, 4));

  for (const b of exact) {
    it(`${b.display_name}: ${b.compression}${b.parent_id ? ', incremental' : ''}`, async () => {
      const source = await openSource('-', Readable.from([imageBytes(b.source_image)]));
      await runBackup({
        backend, catalog, source, volumeId: b.volume_id, backupId: b.id, parentId: b.parent_id ?? undefined,
        compression: b.compression, chunkSize: b.chunk_size, shaBlockSize: b.sha_block_size,
        container: b.container, name: b.display_name, description: b.description,
        timestamp: new Date(b.created_at), threads: 1,
      });
      const theirs = path.join(FIXTURES, 'repo-posix', b.container);
      const ours = path.join(tmp.dir, 'repo', b.container);
      const names = readdirSync(theirs).sort();
      assert.deepEqual(readdirSync(ours).sort(), names);
      assert.equal(names.length, b.object_count + 2);
      for (const name of names) {
        assert.ok(readFileSync(path.join(ours, name)).equals(readFileSync(path.join(theirs, name))), `${name} differs`);
      }
    });
  }
});
