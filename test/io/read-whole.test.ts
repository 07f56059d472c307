/** readWhole reads a file (readFileRange a range of it) into one Buffer, a piece at a time. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { readFileRange, readWhole } from '../../src/io/read-whole.js';
import { scratch } from '../support/cinder-fixtures.js';
import { pseudoRandom } from '../support/engine-helpers.js';

const tmp = scratch('read-whole');
after(() => tmp.cleanup());

describe('readWhole', () => {
  it('reads every byte in order, whatever the piece size, into memory of its own', async () => {
    const data = pseudoRandom(100_003, 11);
    const file = path.join(tmp.dir, 'data');
    writeFileSync(file, data);
    for (const piece of [4096, 7, 99_999, 100_003, 1 << 20, undefined]) {
      const got = await readWhole(file, { piece });
      assert.ok(got.equals(data), `pieces of ${piece}`);
      // All of its ArrayBuffer (not the pool's): it moves to a worker thread without a copy.
      assert.equal(got.byteOffset, 0);
      assert.equal(got.buffer.byteLength, data.length);
    }
  });

  it('reads an empty file', async () => {
    const file = path.join(tmp.dir, 'empty');
    writeFileSync(file, '');
    assert.equal((await readWhole(file)).length, 0);
  });

  it('fails as fs.readFile does: a missing file, a directory, an aborted signal', async () => {
    await assert.rejects(readWhole(path.join(tmp.dir, 'missing')), { code: 'ENOENT' });
    await assert.rejects(readWhole(tmp.dir), { code: 'EISDIR' });
    const ac = new AbortController();
    const why = new Error('stop');
    ac.abort(why);
    await assert.rejects(readWhole(path.join(tmp.dir, 'data'), { signal: ac.signal }), (err: Error) => {
      assert.equal(err.name, 'AbortError');
      assert.equal(err.cause, why);
      return true;
    });
  });
});

describe('readFileRange', () => {
  it('reads the bytes of a range, whatever the piece size, and tells the file size', async () => {
    const data = pseudoRandom(100_003, 12);
    const file = path.join(tmp.dir, 'ranged');
    writeFileSync(file, data);
    for (const piece of [7, 4096, undefined]) {
      for (const [offset, length] of [[0, 100_003], [1, 50_000], [99_990, 100], [100_003, 1], [200_000, 1], [5, 0]] as const) {
        const got = await readFileRange(file, offset, length, { piece });
        assert.ok(got.bytes.equals(data.subarray(offset, offset + length)), `${length} bytes from ${offset} in pieces of ${piece}`);
        assert.equal(got.size, data.length);
      }
    }
  });
});
