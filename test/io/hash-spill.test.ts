import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { VolumeIOError } from '../../src/errors.js';
import { HashSpill } from '../../src/io/hash-spill.js';

/** `n` distinct digests from `from` on, packed. */
const digests = (from: number, n: number) =>
  Buffer.concat(Array.from({ length: n }, (_, i) => createHash('sha256').update(String(from + i)).digest()));

/** Open files of this process whose path starts with `prefix`. */
const openUnder = (prefix: string) =>
  readdirSync('/proc/self/fd').map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return '';
    }
  }).filter((p) => p.startsWith(prefix));

describe('HashSpill', () => {
  it('keeps few digests in memory and reads any stretch back', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'spill-test-'));
    try {
      const s = new HashSpill({ memoryDigests: 100, dir });
      await s.append(digests(0, 60));
      await s.append(digests(60, 40));
      assert.equal(s.length, 100);
      assert.equal(s.spilled, false);
      assert.ok(Buffer.from(s.read(10, 70)).equals(digests(10, 60)));
      assert.deepEqual(readdirSync(dir), []);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('past its memory, puts them in a file without a name that is gone once closed, and reads any stretch back', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'spill-test-'));
    try {
      const s = new HashSpill({ memoryDigests: 100, dir });
      await s.append(digests(0, 70));
      await s.append(digests(70, 50)); // past the memory: what was held goes first
      for (let i = 120; i < 1000; i += 88) await s.append(digests(i, Math.min(88, 1000 - i)));
      assert.equal(s.spilled, true);
      assert.equal(s.length, 1000);
      assert.deepEqual(readdirSync(dir), [], 'no name left in the directory');
      const open = openUnder(dir);
      assert.equal(open.length, 1);
      assert.match(open[0]!, / \(deleted\)$/);
      for (const [a, b] of [[0, 1000], [0, 70], [69, 71], [99, 101], [500, 777], [999, 1000], [990, 2000], [1000, 1000]] as const) {
        assert.ok(Buffer.from(s.read(a, b)).equals(digests(a, Math.min(b, 1000) - a)), `[${a}, ${b})`);
      }
      await s.close();
      assert.deepEqual(openUnder(dir), [], 'closed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says where it could not keep them', async () => {
    const s = new HashSpill({ memoryDigests: 1, dir: '/nonexistent/place' });
    await s.append(digests(0, 1));
    await assert.rejects(s.append(digests(1, 1)), (err: Error) => err instanceof VolumeIOError && err.exitCode === 7 &&
      /^cannot keep the backup's hashes in a temporary file in \/nonexistent\/place \(set TMPDIR for another place\): ENOENT/.test(err.message));
    await s.close();
  });
});
