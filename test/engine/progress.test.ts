/** Progress events: correct percentages, at Cinder's two cadences (every N objects, timer). */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { PosixBackend } from '../../src/backends/posix.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { runBackup } from '../../src/engine/backup.js';
import type { ProgressEvent } from '../../src/engine/progress.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { openSource } from '../../src/engine/source.js';
import { scratch } from '../support/cinder-fixtures.js';

const CHUNK = 64 * 1024;

describe('progress events', () => {
  const tmp = scratch('progress');
  const backend = new PosixBackend(path.join(tmp.dir, 'repo'));
  const catalog = new SqliteCatalog(path.join(tmp.dir, 'catalog.db'));
  const volume = path.join(tmp.dir, 'vol.img');
  const size = 20 * CHUNK + 1000;
  writeFileSync(volume, randomBytes(size));
  after(async () => {
    await catalog.close();
    tmp.cleanup();
  });
  let backupId = '';

  it('reports every N objects with byte-based percentages, ending at 100', async () => {
    const events: ProgressEvent[] = [];
    const source = await openSource(volume);
    const r = await runBackup({
      backend, catalog, source, volumeId: 'vol-progress', chunkSize: CHUNK,
      shaBlockSize: 4096, threads: 1, progressEveryObjects: 5, progressIntervalMs: 0, onProgress: (e) => events.push(e),
    });
    await source.close();
    backupId = r.id;
    assert.deepEqual(events.map((e) => e.reason), ['objects', 'objects', 'objects', 'objects', 'end']);
    assert.deepEqual(events.map((e) => e.objectsDone), [5, 10, 15, 20, 21]);
    for (const e of events.slice(0, 4)) {
      assert.equal(e.bytesTotal, size);
      assert.equal(e.percent, (e.bytesDone / size) * 100);
      assert.equal(e.bytesDone, e.objectsDone * CHUNK);
    }
    assert.equal(events.at(-1)!.percent, 100);
    assert.equal(events.at(-1)!.bytesDone, size);
  });

  it('also reports on a timer, and knows the total of a stream only at its end', async () => {
    async function* slow() {
      for (let i = 0; i < 6; i++) {
        await sleep(60);
        yield randomBytes(CHUNK);
      }
    }
    const events: ProgressEvent[] = [];
    await runBackup({
      backend, catalog, source: await openSource('-', Readable.from(slow())), volumeId: 'vol-stream', chunkSize: CHUNK,
      threads: 1, progressEveryObjects: 1000, progressIntervalMs: 20, onProgress: (e) => events.push(e),
    });
    const timer = events.filter((e) => e.reason === 'timer');
    assert.ok(timer.length > 0, 'timer events');
    for (const e of timer) assert.equal(e.percent, undefined);
    assert.equal(events.at(-1)!.reason, 'end');
    assert.equal(events.at(-1)!.bytesTotal, 6 * CHUNK);
    assert.equal(events.at(-1)!.percent, 100);
  });

  it('restore progress covers the whole volume', async () => {
    const events: ProgressEvent[] = [];
    await restoreBackup({
      backend, catalog, backupId, target: path.join(tmp.dir, 'out.img'), threads: 1, progressEveryObjects: 7,
      progressIntervalMs: 0, onProgress: (e) => events.push(e),
    });
    assert.deepEqual(events.map((e) => e.objectsDone), [7, 14, 21, 21]);
    const percents = events.map((e) => e.percent!);
    assert.deepEqual([...percents].sort((a, b) => a - b), percents);
    assert.equal(percents.at(-1), 100);
  });
});
