/**
 * Retries are counted per operation: operations sharing one RetryBackend (a service's API beside
 * a job, two jobs of one worker) each report only the retries of their own calls. A call is
 * tried again whole: an object given in pieces is read again from its start.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { countingRetries, type Backend, type ObjectPieces } from '../../src/backends/backend.js';
import { RetryBackend } from '../../src/backends/retry.js';
import { TransientBackendError } from '../../src/errors.js';
import { makeRepo, mixedVolume, pseudoRandom } from '../support/engine-helpers.js';

const FAST_RETRY = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5, totalMs: 10_000 };

describe('retry counting', () => {
  const repo = makeRepo('retry-counting');
  after(() => repo.close());

  /** The real repository, but the first put of each object in container `noisy` fails as a store's 503 would. */
  const failedOnce = new Set<string>();
  const flaky: Backend = Object.create(repo.backend, {
    put: {
      value: (c: string, n: string, d: Uint8Array, o?: object) => {
        if (c === 'noisy' && !failedOnce.has(n)) {
          failedOnce.add(n);
          return Promise.reject(new TransientBackendError(`injected 503 for ${n}`));
        }
        return repo.backend.put(c, n, d, o);
      },
    },
  });

  it('a view counts its own calls only', async () => {
    const shared = new RetryBackend(flaky, FAST_RETRY);
    const a = countingRetries(shared);
    const b = countingRetries(shared);
    await Promise.all([repo.backend.ensureContainer('noisy'), repo.backend.ensureContainer('quiet')]);
    await Promise.all([a.backend.put('noisy', 'x1', Buffer.from('1')), b.backend.put('quiet', 'y1', Buffer.from('2'))]);
    assert.equal(a.retries(), 1);
    assert.equal(b.retries(), 0);
    assert.equal(shared.stats.retries, 1);
  });

  it('two backups at once on one backend report their own retries', async () => {
    const shared = new RetryBackend(flaky, FAST_RETRY);
    const vol = repo.file('vol.img', mixedVolume(640 * 1024, 3));
    const [noisy, quiet] = await Promise.all([
      repo.backup(vol, { backend: shared, volumeId: 'noisy-vol', container: 'noisy' }),
      repo.backup(vol, { backend: shared, volumeId: 'quiet-vol', container: 'quiet' }),
    ]);
    const failedPuts = [...failedOnce].filter((n) => n.startsWith(noisy.prefix)).length;
    assert.ok(failedPuts > 3, `every object of the noisy backup failed once (${failedPuts})`);
    assert.equal(noisy.retries, failedPuts);
    assert.equal(quiet.retries, 0, 'the other backup saw no fault');
  });
});

describe('calls tried again', () => {
  const repo = makeRepo('retry-calls');
  after(() => repo.close());

  it('a putPieces tried again reads the pieces from the start, and stores the object whole', async () => {
    await repo.backend.ensureContainer('c');
    const parts = [pseudoRandom(1, 1), pseudoRandom(100_000, 2), pseudoRandom(4097, 3)];
    let reads = 0;
    const data: ObjectPieces = { length: 104_098, *pieces() { reads++; yield* parts; } };
    // The first try sends two pieces, then the connection is reset.
    let tries = 0;
    const flaky: Backend = Object.create(repo.backend, {
      putPieces: {
        value: (c: string, n: string, d: ObjectPieces, o?: object) => {
          if (tries++ > 0) return repo.backend.putPieces(c, n, d, o);
          const sent = d.pieces()[Symbol.iterator]();
          sent.next();
          sent.next();
          return Promise.reject(new TransientBackendError(`injected reset while sending ${n}`));
        },
      },
    });
    const retry = new RetryBackend(flaky, FAST_RETRY);
    await retry.putPieces('c', 'x_sha256file', data);
    assert.ok((await repo.backend.get('c', 'x_sha256file')).equals(Buffer.concat(parts)));
    assert.deepEqual({ tries, reads, retries: retry.stats.retries }, { tries: 2, reads: 2, retries: 1 });
  });

  it('a readRange is tried again after a transient fault', async () => {
    const data = pseudoRandom(10_000, 4);
    await repo.backend.ensureContainer('c');
    await repo.backend.put('c', 'y', data);
    let tries = 0;
    const flaky: Backend = Object.create(repo.backend, {
      readRange: {
        value: (c: string, n: string, offset: number, length: number, o?: object) =>
          tries++ === 0 ? Promise.reject(new TransientBackendError(`injected 503 for ${n}`)) : repo.backend.readRange(c, n, offset, length, o),
      },
    });
    const retry = new RetryBackend(flaky, FAST_RETRY);
    const r = await retry.readRange('c', 'y', 9000, 2000);
    assert.ok(r.bytes.equals(data.subarray(9000)));
    assert.deepEqual({ size: r.size, tries, retries: retry.stats.retries }, { size: 10_000, tries: 2, retries: 1 });
  });
});
