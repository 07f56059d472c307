/**
 * Backups real Cinder wrote with its S3 and Swift drivers, uploaded into a real Swift
 * server through each API, are adopted and restored byte-exactly through each backend.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { Backend } from '../../src/backends/backend.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { rebuildCatalog } from '../../src/engine/records.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { FIXTURES, manifest, scratch } from '../support/cinder-fixtures.js';
import { s3Backend, swiftBackend, uniqueName } from '../support/swift-server.js';

function* files(dir: string, rel = ''): Iterable<string> {
  for (const name of readdirSync(path.join(dir, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    if (statSync(path.join(dir, r)).isDirectory()) yield* files(dir, r);
    else yield r;
  }
}

describe('restoring backups written by real Cinder\'s S3 and Swift drivers', () => {
  const tmp = scratch('cinder-objstore');
  after(() => tmp.cleanup());

  const cases: [string, string, (c: string) => Backend][] = [
    ['repo-s3', 's3', (c) => s3Backend(c)],
    ['repo-swift', 'swift', (c) => swiftBackend(c)],
  ];
  for (const [repo, api, make] of cases) {
    it(`${repo} through the ${api} API`, async () => {
      const fixtures = manifest.backups.filter((b) => b.repository === repo);
      const root = path.join(FIXTURES, repo, 'volumebackups');
      const container = uniqueName(repo);
      const backend = make(container);
      const catalog = new SqliteCatalog(path.join(tmp.dir, `${repo}.db`));
      try {
        await backend.ensureContainer(container);
        for (const key of files(root)) await backend.put(container, key, readFileSync(path.join(root, key)));
        const report = await rebuildCatalog(backend, catalog, [container]);
        assert.deepEqual(report.unreadable, []);
        assert.deepEqual(report.added.sort(), fixtures.map((b) => b.id).sort());
        for (const b of fixtures) {
          const rec = (await catalog.get(b.id))!;
          assert.equal(rec.service_metadata, b.service_metadata);
          assert.equal(rec.parent_id, b.parent_id);
          const target = path.join(tmp.dir, `${b.id}.img`);
          await restoreBackup({ backend, catalog, backupId: b.id, target, threads: 1 });
          assert.equal(createHash('sha256').update(readFileSync(target)).digest('hex'), b.restored_sha256, b.display_name);
        }
      } finally {
        await catalog.close();
        await backend.close();
      }
    });
  }
});
