/**
 * Volume sources read exactly the volume's bytes into whole chunks, through O_DIRECT into
 * their own buffers (holes read as zeros) and through the page cache into any other memory.
 */
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
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

  /** A sparse file of `blocks` 4 KiB blocks holding random data only in `data`, and its bytes. */
  function sparseFile(name: string, blocks: number, data: (block: number) => boolean): { file: string; expected: Buffer } {
    const file = path.join(dir, name);
    const expected = Buffer.alloc(blocks * 4096);
    const fd = openSync(file, 'w');
    for (let b = 0; b < blocks; b++) {
      if (!data(b)) continue;
      pseudoRandom(4096, b + 1).copy(expected, b * 4096);
      writeSync(fd, expected, b * 4096, 4096, b * 4096);
    }
    ftruncateSync(fd, expected.length);
    closeSync(fd);
    return { file, expected };
  }

  /**
   * Reads all of `src` into its own buffers of `chunk` bytes as a backup does: four reads in
   * flight, the next one started as soon as one is done.
   */
  async function readAhead(src: VolumeSource, chunk: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: 4 }, async () => {
      const buffer = await src.buffer(chunk);
      while (next * chunk < src.size!) {
        const part = next++;
        parts[part] = Buffer.from(await src.read(buffer));
      }
    }));
    return Buffer.concat(parts);
  }

  // The trial read that places O_DIRECT memory must not be made in a hole: the filesystem fills
  // one without checking the memory, so any start passes there and reads of data then fail.
  it('a file that begins with a hole is read through O_DIRECT, with reads in flight together', async () => {
    const { file, expected } = sparseFile('leading-hole.img', 1024, (b) => b >= 512); // 2 MiB of hole, 2 MiB of data
    for (let i = 0; i < 4; i++) {
      const src = await openSource(file);
      try {
        assert.ok((await readAhead(src, 65536)).equals(expected));
        assert.equal((src as { readsDirectly?: boolean }).readsDirectly, true, 'no read was refused');
      } finally {
        await src.close();
      }
    }
  });

  // Where no trial block holds data the trial is only a hint: memory that a read then refuses is
  // read through the cache, and the other reads in flight go on.
  it('a read refused O_DIRECT after all is made through the cache, without failing the reads in flight', async () => {
    // Data only in blocks the trial does not try (0, powers of 2 and the last are holes).
    const { file, expected } = sparseFile('scattered.img', 64, (b) => ![0, 1, 2, 4, 8, 16, 32, 63].includes(b));
    for (let i = 0; i < 50; i++) {
      const src = await openSource(file);
      try {
        assert.ok((await readAhead(src, 4096)).equals(expected));
      } finally {
        await src.close();
      }
    }
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
