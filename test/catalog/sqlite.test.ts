import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, it } from 'node:test';
import { openCatalog } from '../../src/catalog/open.js';
import { CatalogError, InvalidInputError } from '../../src/errors.js';
import { scratch } from '../support/cinder-fixtures.js';
import { catalogConformance, record } from './conformance.js';
import { jobQueueConformance } from './job-conformance.js';

const tmp = scratch('sqlite-catalog');
after(() => tmp.cleanup());
let n = 0;
catalogConformance('sqlite', () => openCatalog(path.join(tmp.dir, `catalog-${n++}.db`)));
jobQueueConformance('sqlite', async () => path.join(tmp.dir, `jobs-${n++}.db`));

it('sqlite: a file that is no database is refused as bad input, naming it', async () => {
  const file = path.join(tmp.dir, 'notes.txt');
  writeFileSync(file, 'not a database, just some text that is long enough to be read as a header\n');
  await assert.rejects(openCatalog(file), (err: Error) =>
    err instanceof InvalidInputError && err.message === `cannot open catalog ${file}: file is not a database`);
});

it('sqlite: a full disk under the catalog fails the write with an error naming the catalog; what was written stays', async (t) => {
  // A real full filesystem: a small tmpfs (the suite runs as root, as it installs its servers).
  const full = path.join(tmp.dir, 'full');
  mkdirSync(full);
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', full], { encoding: 'utf8' });
  assert.equal(mount.status, 0, `mounting a small tmpfs for this test needs root: ${mount.stderr}`);
  t.after(() => spawnSync('umount', [full]));
  const file = path.join(full, 'catalog.db');
  const c = await openCatalog(file);
  try {
    let failure: unknown;
    let written = 0;
    for (; written < 100 && !failure; written++) {
      await c.create(record(`r${written}`, { display_description: 'x'.repeat(20_000) })).catch((err: unknown) => (failure = err));
    }
    assert.ok(failure instanceof CatalogError, `a CatalogError, got ${String(failure)}`);
    assert.match(failure.message, new RegExp(`^catalog ${file}: (database or disk is full|disk I/O error)$`));
    assert.equal(failure.exitCode, 6);
    assert.ok(written > 1, 'some records fitted');
    assert.equal((await c.list()).length, written - 1);
  } finally {
    await c.close();
  }
});

it('sqlite: processes creating one new catalog at the same moment all open it (the schema is made once)', async () => {
  // Each process opens the file, makes the schema if it is missing, and lists (through the CLI).
  const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
  for (let round = 0; round < 6; round++) {
    const file = path.join(tmp.dir, `race-${round}.db`);
    const runs = await Promise.all(Array.from({ length: 8 }, () => new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn(process.execPath, [main, '--repo', path.join(tmp.dir, 'race-repo'), '--catalog', file, 'list'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      child.on('close', (code) => resolve({ code, err }));
    })));
    for (const r of runs) assert.equal(r.code, 0, `round ${round}: ${r.err}`);
  }
});
