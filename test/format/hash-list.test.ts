import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { DIGEST_BYTES, HashList, HashListBuilder, decodeHexDigest, encodeHexDigest } from '../../src/format/hash-list.js';

const digest = (i: number) => createHash('sha256').update(String(i)).digest('hex');
const hashes = (n: number) => Array.from({ length: n }, (_, i) => digest(i));

describe('HashList', () => {
  it('packs hex digests 32 bytes each and gives them back as lowercase hex', () => {
    const hex = hashes(5);
    const list = HashList.fromHex([hex[0]!, hex[1]!.toUpperCase(), ...hex.slice(2)]);
    assert.equal(list.length, 5);
    assert.equal(list.bytes.length, 5 * DIGEST_BYTES);
    assert.ok(list.bytes.equals(Buffer.from(hex.join(''), 'hex')));
    assert.deepEqual(Array.from({ length: 5 }, (_, i) => list.hexAt(i)), hex);
    assert.equal(HashList.fromHex([]).length, 0);
    assert.equal(new HashList().length, 0);
  });

  it('names the first entry that is not a SHA-256 hex digest', () => {
    const h = digest(1);
    // U+0130 and U+0161 end in the bytes of '0' and 'a': a write as Latin-1 would pass them off as digits.
    const bad = ['x'.repeat(64), h.slice(1), `${h}0`, `${h.slice(0, 63)}"`, `${h.slice(0, 63)}é`, `İ${h.slice(1)}`,
      `${h.slice(0, 63)}š`, `${h.slice(0, 62)}日a`, `${h.slice(0, 63)}g`, `/${h.slice(1)}`, `${h.slice(0, 31)}:${h.slice(32)}`,
      `${h.slice(0, 40)}@${h.slice(41)}`, `${h.slice(0, 40)}G${h.slice(41)}`, `${h.slice(0, 40)}\`${h.slice(41)}`, ''];
    for (const b of bad) {
      const list = [...hashes(4)];
      list[2] = b;
      assert.throws(() => HashList.fromHex(list), { name: 'TypeError', message: 'sha256s[2] is not a SHA-256 hex digest' }, b);
    }
    assert.throws(() => HashList.fromHex([h, 5 as unknown as string], 'parent'), { message: 'parent[1] is not a SHA-256 hex digest' });
  });

  it('holds only whole digests', () => {
    assert.throws(() => new HashList(new Uint8Array(33)), { name: 'RangeError', message: '33 bytes are not a whole number of SHA-256 digests' });
    assert.throws(() => new HashListBuilder().append(new Uint8Array(31)), { name: 'RangeError' });
  });

  it('compares digests of two lists by position; a position past either end is no match', () => {
    const a = HashList.fromHex(hashes(4));
    const b = HashList.fromHex([digest(2), digest(9), digest(0)]);
    assert.equal(a.equalsAt(2, b, 0), true);
    assert.equal(a.equalsAt(0, b, 2), true);
    assert.equal(a.equalsAt(1, b, 1), false);
    assert.equal(a.equalsAt(3, b, 0), false);
    assert.equal(a.equalsAt(3, b, 3), false);
    assert.equal(a.equalsAt(4, a, 4), false);
    assert.equal(a.equalsAt(-1, a, -1), false);
    // Digests differing only in the last byte, or only in the first.
    const x = Buffer.from(digest(1), 'hex');
    const last = Buffer.from(x);
    last[31]! ^= 1;
    const first = Buffer.from(x);
    first[0]! ^= 0x80;
    const list = new HashList(Buffer.concat([x, last, first]));
    assert.equal(list.equalsAt(0, list, 1), false);
    assert.equal(list.equalsAt(0, list, 2), false);
    assert.equal(list.equalsAt(0, new HashList(x), 0), true);
  });

  it('gives views with subarray and copies in memory of their own with copy, both clamped to the list', () => {
    const list = HashList.fromHex(hashes(6));
    const view = list.subarray(2, 4);
    assert.deepEqual([view.hexAt(0), view.hexAt(1)], [digest(2), digest(3)]);
    assert.equal(view.bytes.buffer, list.bytes.buffer);
    assert.equal(list.subarray(5, 9).length, 1);
    assert.equal(list.subarray(7, 9).length, 0);

    const copy = list.copy(4, 9);
    assert.equal(copy.length, 2 * DIGEST_BYTES);
    // All of its ArrayBuffer, so that it moves to a thread instead of taking the list's memory along.
    assert.equal(copy.byteOffset, 0);
    assert.equal(copy.buffer.byteLength, copy.length);
    assert.ok(Buffer.from(copy).equals(list.subarray(4).bytes));
    list.bytes.fill(0, 4 * DIGEST_BYTES);
    assert.equal(new HashList(copy).hexAt(0), digest(4));
    assert.equal(list.copy(6, 8).length, 0);
  });

  it('refuses a position outside the list for hex', () => {
    const list = HashList.fromHex(hashes(2));
    for (const i of [2, -1, 0.5]) assert.throws(() => list.hexAt(i), { name: 'RangeError', message: `hash ${i} is outside a list of 2` });
  });
});

describe('HashListBuilder', () => {
  it('collects digests appended in pieces of any size, growing as needed', () => {
    const all = HashList.fromHex(hashes(3000));
    const b = new HashListBuilder();
    assert.equal(b.list().length, 0);
    for (let i = 0; i < all.length; ) {
      const n = Math.min(1 + (i % 700), all.length - i);
      b.append(all.copy(i, i + n));
      i += n;
      assert.equal(b.length, i);
    }
    assert.ok(b.list().bytes.equals(all.bytes));
  });
});

describe('hex digits of a digest', () => {
  it('encode and decode every byte value, digits in either case', () => {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const text = Buffer.alloc(2 * 256);
    for (let d = 0; d < 8; d++) encodeHexDigest(bytes, d * DIGEST_BYTES, text, d * 2 * DIGEST_BYTES);
    assert.equal(text.toString('latin1'), bytes.toString('hex'));
    const back = Buffer.alloc(256);
    const upper = Buffer.from(text.toString('latin1').toUpperCase(), 'latin1');
    for (let d = 0; d < 8; d++) assert.ok(decodeHexDigest(upper, d * 2 * DIGEST_BYTES, back, d * DIGEST_BYTES));
    assert.ok(back.equals(bytes));
  });

  it('decoding says false when any one of the 64 bytes is not a hex digit', () => {
    const text = Buffer.from(digest(3), 'latin1');
    const out = Buffer.alloc(DIGEST_BYTES);
    assert.ok(decodeHexDigest(text, 0, out, 0));
    for (let at = 0; at < 64; at++) {
      for (const c of [0x00, 0x2f, 0x3a, 0x40, 0x47, 0x60, 0x67, 0x80, 0xff]) {
        const bad = Buffer.from(text);
        bad[at] = c;
        assert.equal(decodeHexDigest(bad, 0, out, 0), false, `byte 0x${c.toString(16)} at ${at}`);
      }
    }
  });
});
