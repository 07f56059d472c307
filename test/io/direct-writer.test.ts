/**
 * DirectWriter writes exactly the bytes given, at the offsets given, whether they come
 * from its own aligned shared memory (written without staging) or from ordinary memory
 * (staged), with aligned and unaligned starts, lengths and tails.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { constants as fsc, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { DirectWriter, stagePoolCount } from '../../src/io/direct-writer.js';

const dirs: string[] = [];
function scratch(parent: string): string {
  const d = mkdtempSync(path.join(parent, 'chunkvault-direct-'));
  dirs.push(d);
  return d;
}
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Writes pieces of `pattern` from `source(piece)` at the same offsets, and checks the file. */
async function roundTrip(dir: string, fromShared: boolean): Promise<{ aligned: boolean }> {
  const size = 3 * 1024 * 1024 + 12345;
  const pattern = randomBytes(size);
  const file = path.join(dir, 'out.img');
  const w = await DirectWriter.open(file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL);
  await w.fh.truncate(size);
  const shared = fromShared ? await w.sharedAlignedBuffer(size) : undefined;
  const source = shared ?? Buffer.from(pattern);
  if (shared) shared.set(pattern);
  // aligned starts and lengths, an unaligned length, an unaligned start, the unaligned tail
  const pieces: [number, number][] = [[0, 65536], [65536, 73828], [73828, 77924], [77924, 77924 + (1 << 20)], [77924 + (1 << 20), size]];
  for (const [from, to] of pieces) await w.write(source.subarray(from, to), from);
  await w.sync();
  await w.close();
  assert.ok(readFileSync(file).equals(pattern), 'file content equals what was written');
  return { aligned: shared !== undefined };
}

describe('DirectWriter', () => {
  const local = scratch(tmpdir());

  it('writes from ordinary memory through the staging buffers', async () => {
    await roundTrip(scratch(local), false);
  });

  it('writes from its aligned shared memory without staging', async () => {
    // The temp directory is on a disk filesystem here and in CI (ext4), which takes O_DIRECT.
    const { aligned } = await roundTrip(scratch(local), true);
    assert.equal(aligned, true, 'an O_DIRECT-capable filesystem gets aligned shared memory');
  });

  it('keeps staging buffers per filesystem, not per directory', async () => {
    await roundTrip(scratch(local), false);
    const before = stagePoolCount();
    for (let i = 0; i < 5; i++) await roundTrip(scratch(local), false);
    assert.equal(stagePoolCount(), before, 'five more directories on the same filesystem add no buffers');
  });

  it('writes exactly on tmpfs too', async () => {
    await roundTrip(scratch('/dev/shm'), true);
    await roundTrip(scratch('/dev/shm'), false);
  });
});

describe('DirectWriter.writePieces', () => {
  it('writes pieces of any length one after the other, and counts them', async () => {
    const dir = scratch(process.cwd());
    const lengths = [1, 4095, 4097, 8192, 100_000, 3, 0, 4093, 1 << 20, 5];
    const pieces = lengths.map((n) => randomBytes(n));
    const file = path.join(dir, 'pieces.img');
    const w = await DirectWriter.open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL);
    let calls = 0;
    const total = await w.writePieces(pieces, () => void calls++);
    await w.sync();
    await w.close();
    assert.equal(total, lengths.reduce((a, b) => a + b, 0));
    assert.equal(calls, pieces.length);
    assert.ok(readFileSync(file).equals(Buffer.concat(pieces)));
  });
});
