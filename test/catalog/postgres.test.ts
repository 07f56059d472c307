import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { it } from 'node:test';
import pg from 'pg';
import { openCatalog, redactCatalogAddress } from '../../src/catalog/open.js';
import { CancelledError, CatalogError } from '../../src/errors.js';
import { dropDatabase, freshDatabase } from '../support/pg-server.js';
import { startThrottleProxy } from '../support/service.js';
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

it('postgres: with the server not answering, an abandoned claim and a close cut their connections instead of waiting', async () => {
  const url = new URL(await freshDatabase());
  const proxy = await startThrottleProxy({ host: url.hostname, port: Number(url.port) });
  const viaProxy = new URL(url);
  viaProxy.port = new URL(proxy.url).port;
  const c = await openCatalog(viaProxy.href);
  const admin = new pg.Client({ connectionString: url.href });
  await admin.connect();
  // Sessions of this database with a transaction open (the claim's, once its BEGIN has arrived).
  const inTransaction = async () => Number((await admin.query(
    `SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'`, [url.pathname.slice(1)])).rows[0].n);
  // Either settles well before the 30 s query timeout, or the catalog waited for the server.
  const promptly = <T>(p: Promise<T>) => Promise.race([p.then((v) => ({ v }), (e: Error) => ({ e })), sleep(15_000).then(() => 'waited for the server')]);
  try {
    await c.jobs.enqueue({ id: 'j1', kind: 'backup', backup_id: 'b1', resource: 'volume:v', params: {} });
    await Promise.all([c.jobs.list(), c.jobs.list()]); // two connections open: one for the claim, one for a query
    proxy.delayMs = 3_600_000; // frozen: connections stay open, nothing comes back
    const stop = new AbortController();
    const claim = c.jobs.claim('w1', 60_000, stop.signal);
    for (let i = 0; i < 300 && (await inTransaction()) === 0; i++) await sleep(50);
    assert.equal(await inTransaction(), 1, 'the claim is in flight');
    stop.abort();
    const abandoned = await promptly(claim);
    assert.ok(typeof abandoned === 'object' && 'e' in abandoned && abandoned.e instanceof CancelledError, JSON.stringify(abandoned));
    assert.match(abandoned.e.message, /claim abandoned: the worker is stopping/);
    for (let i = 0; i < 300 && (await inTransaction()) > 0; i++) await sleep(50);
    assert.equal(await inTransaction(), 0, 'the server rolled the claim back');
    assert.equal((await admin.query(`SELECT status FROM jobs WHERE id = 'j1'`)).rows[0].status, 'queued', 'no job was taken');

    // A query in flight (not a connection being made): the server has run it, its answer is held back.
    const since = (await admin.query('SELECT clock_timestamp() AS t')).rows[0].t as Date;
    const listing = promptly(c.jobs.list());
    const listed = async () => Number((await admin.query(
      `SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = $1 AND query_start > $2 AND query LIKE 'SELECT * FROM jobs%'`,
      [url.pathname.slice(1), since])).rows[0].n);
    for (let i = 0; i < 300 && (await listed()) === 0; i++) await sleep(50);
    assert.equal(await listed(), 1, 'the query reached the server');
    assert.equal(await promptly(c.close()).then((r) => (typeof r === 'object' ? 'closed' : r)), 'closed');
    const cut = await listing;
    assert.ok(typeof cut === 'object' && 'e' in cut, 'the query in flight failed');
  } finally {
    await c.close().catch(() => {});
    await admin.end();
    await proxy.close();
  }
});
