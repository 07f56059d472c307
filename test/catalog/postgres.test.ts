import assert from 'node:assert/strict';
import { it } from 'node:test';
import { openCatalog, redactCatalogAddress } from '../../src/catalog/open.js';
import { CatalogError } from '../../src/errors.js';
import { dropDatabase, freshDatabase } from '../support/pg-server.js';
import { catalogConformance, record } from './conformance.js';
import { jobQueueConformance } from './job-conformance.js';

catalogConformance('postgres', async () => openCatalog(await freshDatabase()));
jobQueueConformance('postgres', freshDatabase);

it('postgres: concurrent openers migrate once; compare-and-set lets exactly one writer win', async () => {
  const url = await freshDatabase();
  const catalogs = await Promise.all(Array.from({ length: 4 }, () => openCatalog(url)));
  try {
    await catalogs[0]!.create(record('race', { status: 'available' }));
    const wins = await Promise.all(catalogs.map((c) => c.update('race', { status: 'deleting' }, ['available'])));
    assert.equal(wins.filter(Boolean).length, 1);
  } finally {
    for (const c of catalogs) await c.close();
  }
});

it('never shows a catalog password in messages', () => {
  assert.equal(redactCatalogAddress('postgres://backup:s3cret@127.0.0.1:5433/backup'), 'postgres://backup:***@127.0.0.1:5433/backup');
});

it('postgres: a database that goes away under an open catalog gives errors naming the catalog (password hidden)', async () => {
  const url = await freshDatabase();
  const c = await openCatalog(url);
  try {
    await c.create(record('before'));
    await dropDatabase(url);
    await assert.rejects(c.list(), (err: Error) =>
      err instanceof CatalogError && err.message.startsWith(`catalog ${redactCatalogAddress(url)}: `));
    await assert.rejects(c.jobs.list(), CatalogError);
  } finally {
    await c.close();
  }
});
