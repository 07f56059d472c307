/**
 * Volume sources read exactly the volume's bytes into whole chunks, through O_DIRECT into
 * their own buffers (holes read as zeros) and through the page cache into any other memory.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { openSource, type VolumeSource } from '../../src/engine/source.js';
import { pseudoRandom } from '../support/engine-helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'chunkvault-source-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Reads the whole source in chunks of `chunk` bytes into `next()` buffers. */
async function readAll(src: VolumeSource, chunk: number, next: () => Promise<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (;;) {
    const got = await src.read(await next());
    parts.push(Buffer.from(got));
    if (got.length < chunk) break;
  }
  await src.close();
  return Buffer.concat(parts);
}

describe('file sources', () => {
  for (const size of [4096, 4097, 3 * 65536, 3 * 65536 + 4095, 1_000_003]) {
    it(`a file of ${size} bytes, read in 64 KiB chunks into its own buffers and into plain ones`, async () => {
      const data = pseudoRandom(size, size);
      const file = path.join(dir, `f-${size}.img`);
      writeFileSync(file, data);
      const direct = await openSource(file);
      assert.equal((direct as { readsDirectly?: boolean }).readsDirectly, true, 'the disk filesystem of the test takes O_DIRECT');
      const own = await readAll(direct, 65536, () => direct.buffer(65536));
      assert.ok(own.equals(data));
      assert.equal((direct as { readsDirectly?: boolean }).readsDirectly, true, 'no fallback was needed');
      const cached = await openSource(file);
      assert.ok((await readAll(cached, 65536, async () => Buffer.alloc(65536))).equals(data));
    });
  }

  it('a sparse file reads its holes as zeros, whatever the chunk alignment', async () => {
    const file = path.join(dir, 'sparse.img');
    const fd = openSync(file, 'w');
    const a = pseudoRandom(10_000, 1);
    const b = pseudoRandom(70_000, 2);
    writeSync(fd, a, 0, a.length, 5_000);
    writeSync(fd, b, 0, b.length, 3 * 1024 * 1024 + 123);
    closeSync(fd);
    const expected = Buffer.alloc(3 * 1024 * 1024 + 123 + b.length);
    a.copy(expected, 5_000);
    b.copy(expected, 3 * 1024 * 1024 + 123);
    for (const chunk of [65536, 1 << 20, 40_000]) {
      const src = await openSource(file);
      assert.ok((await readAll(src, chunk, () => src.buffer(chunk))).equals(expected), `chunks of ${chunk}`);
    }
  });

  it('reads in flight together fill consecutive chunks in call order', async () => {
    const data = pseudoRandom(5 * 65536 + 1000, 5);
    const file = path.join(dir, 'parallel.img');
    writeFileSync(file, data);
    const src = await openSource(file);
    assert.equal(src.parallelReads, true);
    const buffers = await Promise.all(Array.from({ length: 8 }, () => src.buffer(65536)));
    const got = await Promise.all(buffers.map((b) => src.read(b)));
    await src.close();
    assert.deepEqual(got.map((g) => g.length), [65536, 65536, 65536, 65536, 65536, 1000, 0, 0]);
    assert.ok(Buffer.concat(got).equals(data));
  });

  it('stdin and pipes fill whole chunks from short reads', async () => {
    const data = pseudoRandom(300_000, 9);
    const pieces = Array.from({ length: 30 }, (_, i) => data.subarray(i * 10_000, (i + 1) * 10_000));
    const src = await openSource('-', Readable.from(pieces));
    assert.equal(src.size, undefined);
    assert.equal(src.parallelReads, false, 'a stream is read one chunk at a time');
    const buffers: Buffer[] = [];
    const got = await readAll(src, 65536, async () => {
      const b = await src.buffer(65536);
      buffers.push(b);
      return b;
    });
    assert.ok(got.equals(data));
    assert.ok(buffers.every((b) => b.buffer instanceof SharedArrayBuffer), 'shared memory worker threads can read in place');
  });
});
