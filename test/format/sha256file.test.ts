import assert from 'node:assert/strict';
import { constants } from 'node:buffer';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { IntegrityError } from '../../src/errors.js';
import { HashList } from '../../src/format/hash-list.js';
import {
  countFromEnds, decodeHashLines, decodeSha256File as decodeWhole, encodeSha256File, sha256FileCapacity, sha256FileLength, sha256FilePieces,
  type Sha256File,
} from '../../src/format/metadata.js';
import { Sha256FileReader } from '../../src/format/sha256file-reader.js';
import { pyJsonDumps } from '../../src/format/pyjson.js';
import { FIXTURES } from '../support/cinder-fixtures.js';

/** The sha256file as Python's json.dumps(sort_keys=True, indent=2) prints it, built as one string. */
function stringEncoded(s: Sha256File): Buffer {
  return Buffer.from(
    pyJsonDumps({
      backup_description: s.description,
      backup_id: s.backupId,
      backup_name: s.name,
      chunk_size: s.blockSize,
      created_at: s.createdAt,
      sha256s: hexes(s.sha256s),
      version: s.version,
      volume_id: s.volumeId,
    }),
    'utf8',
  );
}

const digest = (i: number) => createHash('sha256').update(String(i)).digest('hex');
const hashes = (n: number) => Array.from({ length: n }, (_, i) => digest(i));
const hexes = (list: HashList) => Array.from({ length: list.length }, (_, i) => list.hexAt(i));

function sha256File(n: number, header: Partial<Sha256File> = {}): Sha256File {
  return {
    version: '1.0.0',
    backupId: 'bbbbbbbb-0000-4000-8000-000000000001',
    volumeId: '11111111-2222-4333-8444-555555555555',
    name: 'nightly',
    description: null,
    createdAt: '2024-01-02 03:04:05.123456+00:00',
    blockSize: 32768,
    sha256s: HashList.fromHex(hashes(n)),
    ...header,
  };
}

const where = { backupId: 'b1', object: 'P_sha256file' };

/** Piece sizes that cut entries everywhere: inside digits, at quotes, at separators. */
const PIECES = [1, 2, 3, 7, 64, 65, 66, 67, 68, 200, 4096];

/**
 * What the piecewise reader makes of `raw` fed in pieces of `size` (undefined: it gave up). It
 * must give the same when it only counts.
 */
function streamed(raw: Buffer, size: number): Sha256File | undefined {
  const read = (keep: boolean) => {
    const reader = new Sha256FileReader(raw.length, keep);
    for (let at = 0; at < raw.length && !reader.givenUp; at += size) reader.feed(raw.subarray(at, at + size));
    return reader.ended(where);
  };
  const kept = read(true);
  const counted = read(false);
  if (!kept) {
    assert.equal(counted, undefined, 'counting read what reading gave up');
    return undefined;
  }
  assert.deepEqual(counted, { header: kept.header, blocks: kept.blocks });
  assert.equal(kept.hashes?.length, kept.blocks);
  return { ...kept.header, sha256s: kept.hashes! };
}

/**
 * The document decoded whole; read in pieces of every size it must come out the same, or the
 * piecewise reader must give it up (`streams`: it may not).
 */
function decodeSha256File(raw: Buffer, w = where, o: { streams?: boolean } = {}): Sha256File {
  let whole: Sha256File | Error;
  try {
    whole = decodeWhole(raw, w);
  } catch (err) {
    whole = err as Error;
  }
  for (const size of PIECES) {
    const piecewise = streamed(raw, size);
    if (whole instanceof Error || !piecewise) {
      assert.equal(piecewise, undefined, `pieces of ${size} bytes read what decodes whole as ${String(whole)}`);
      assert.ok(!o.streams, `pieces of ${size} bytes were given up`);
    } else {
      assert.deepEqual(piecewise, whole, `pieces of ${size} bytes`);
    }
  }
  if (whole instanceof Error) throw whole;
  return whole;
}

function rejects(raw: string | Buffer, message: string | RegExp) {
  assert.throws(
    () => decodeSha256File(typeof raw === 'string' ? Buffer.from(raw) : raw, where),
    (err: Error) => {
      assert.ok(err instanceof IntegrityError, `${err.name}: ${err.message}`);
      assert.equal(err.context.object, 'P_sha256file');
      if (typeof message === 'string') assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

/** The document as a plain object, as other JSON writers would be given it. */
function plain(s: Sha256File): Record<string, unknown> {
  return JSON.parse(stringEncoded(s).toString('utf8')) as Record<string, unknown>;
}

describe('encodeSha256File', () => {
  it('writes the bytes json.dumps(sort_keys=True, indent=2) does, for 0, 1, 2 and more hashes', () => {
    for (const n of [0, 1, 2, 3, 10, 1000, 65536]) {
      const s = sha256File(n);
      const raw = encodeSha256File(s);
      assert.ok(raw.equals(stringEncoded(s)), `${n} hashes`);
      assert.equal(raw.length, sha256FileLength(s, n));
    }
  });

  it('keeps the exact layout around the list: empty list, one entry, last entry without a comma', () => {
    const s = sha256File(0, { name: null, createdAt: 'c', backupId: 'b', volumeId: 'v', blockSize: 512 });
    assert.equal(encodeSha256File(s).toString(), '{\n  "backup_description": null,\n  "backup_id": "b",\n  "backup_name": null,\n' +
      '  "chunk_size": 512,\n  "created_at": "c",\n  "sha256s": [],\n  "version": "1.0.0",\n  "volume_id": "v"\n}');
    const h = digest(0);
    assert.ok(encodeSha256File({ ...s, sha256s: HashList.fromHex([h]) }).toString().includes(`"sha256s": [\n    "${h}"\n  ],\n  "version"`));
    assert.ok(encodeSha256File({ ...s, sha256s: HashList.fromHex([h, h]) }).toString().includes(`"sha256s": [\n    "${h}",\n    "${h}"\n  ],\n`));
  });

  it('matches for every header Python escapes, even one that reads like the list', () => {
    for (const text of [null, '', 'é日本"\\\t\n\r\b\f\u0001😀', '\n  "sha256s": []', 'sha256s', '"sha256s": [\n    "x"\n  ]']) {
      for (const n of [0, 1, 5]) {
        const s = sha256File(n, { name: text, description: text ?? 'd', createdAt: text ?? '' });
        assert.ok(encodeSha256File(s).equals(stringEncoded(s)), `${JSON.stringify(text)}, ${n} hashes`);
      }
    }
  });

  it('writes digests given in uppercase in lowercase, as hexdigest() gives them', () => {
    const lower = hashes(3);
    const s = sha256File(0, { sha256s: HashList.fromHex([lower[0]!, lower[1]!.toUpperCase(), lower[2]!]) });
    assert.ok(encodeSha256File(s).equals(stringEncoded({ ...s, sha256s: HashList.fromHex(lower) })));
    assert.ok(encodeSha256File(s).toString().includes(lower[1]!));
  });

  it('writes every byte value of a digest as its two hex digits', () => {
    // Digests 0x00..0x1f, 0x20..0x3f, ... 0xe0..0xff: each byte value once.
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const s = sha256File(0, { sha256s: new HashList(all) });
    const expected = Array.from({ length: 8 }, (_, i) => all.toString('hex', 32 * i, 32 * i + 32));
    assert.deepEqual(hexes(s.sha256s), expected);
    assert.ok(encodeSha256File(s).equals(stringEncoded(s)));
    assert.ok(encodeSha256File(s).toString().includes(`"${expected[7]}"\n  ]`));
  });

  it("says how many hashes one backup can list: what fits in a store's largest object", () => {
    const s = sha256File(0);
    assert.equal(sha256FileCapacity(s), Infinity);
    const limit = 5 * 1024 ** 3;
    const max = sha256FileCapacity(s, limit);
    assert.ok(max > 74_000_000, `${max}`);
    assert.ok(sha256FileLength(s, max) <= limit);
    assert.ok(sha256FileLength(s, max + 1) > limit);
    assert.equal(sha256FileCapacity(s, 10), 0);
  });

  it('writes the same bytes in pieces of any size', () => {
    for (const n of [0, 1, 2, 3, 1000]) {
      const s = sha256File(n, { name: 'é"\n' });
      const whole = stringEncoded(s);
      for (const size of [1, 71, 72, 73, 144, 1 << 20]) {
        const body = sha256FilePieces(s, size);
        assert.equal(body.length, whole.length, `${n} hashes, ${size}`);
        const pieces = [...body.pieces()];
        assert.ok(Buffer.concat(pieces).equals(whole), `${n} hashes, pieces of ${size} bytes`);
        assert.ok(Buffer.concat([...body.pieces()]).equals(whole), 'again, from the start');
        if (n > 1 && size < 144) assert.ok(pieces.length >= n, `${pieces.length} pieces`);
      }
    }
  });
});

describe('decodeSha256File', () => {
  it('reads back what Cinder wrote, and writes it again byte for byte (every sha256file of the fixtures)', () => {
    const files = readdirSync(FIXTURES, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('_sha256file'));
    assert.ok(files.length >= 10, `${files.length} fixtures`);
    for (const f of files) {
      const raw = readFileSync(path.join(FIXTURES, f));
      const s = decodeSha256File(raw, where, { streams: true });
      assert.ok(s.sha256s.length > 0, f);
      assert.equal(s.sha256s.hexAt(0), JSON.parse(raw.toString()).sha256s[0], f);
      assert.ok(encodeSha256File(s).equals(raw), f);
    }
  });

  it('reads back what the encoder wrote', () => {
    for (const n of [0, 1, 2, 1000]) {
      const s = sha256File(n, { name: 'é"\n', description: 'sha256s' });
      assert.deepEqual(decodeSha256File(encodeSha256File(s), where, { streams: true }), s);
    }
  });

  it('accepts any JSON layout of the same document: no spaces, tabs and CRLF, keys in any order', () => {
    const s = sha256File(5);
    const doc = plain(s);
    const reordered = Object.fromEntries(Object.entries(doc).reverse());
    const layouts = [
      JSON.stringify(doc),
      JSON.stringify(reordered),
      JSON.stringify(reordered, null, '\t').replaceAll('\n', '\r\n'),
      ` \n{"sha256s" : [ ${hexes(s.sha256s).map((h) => JSON.stringify(h)).join(' ,\n')} ] ,"chunk_size":32768,` +
        `"backup_id":"${s.backupId}","volume_id":"${s.volumeId}","backup_name":"nightly","backup_description":null,` +
        `"created_at":"${s.createdAt}","version":"1.0.0"}\n\t`,
    ];
    for (const text of layouts) assert.deepEqual(decodeSha256File(Buffer.from(text), where, { streams: true }), s, text);
  });

  it('finds the list by its member name only: not in a string value, not in a nested object, also when escaped', () => {
    const s = sha256File(3, { description: 'sha256s', name: '"sha256s": [1]' });
    const doc = plain(s);
    const text = JSON.stringify({ extra: { sha256s: [1, 2] }, backup_description: 'sha256s', ...doc, z: ['sha256s'] });
    assert.deepEqual(decodeSha256File(Buffer.from(text), where), s);
    const other = sha256File(3);
    const escaped = JSON.stringify(plain(other)).replace('"sha256s"', '"sha256\\u0073"');
    assert.ok(escaped.includes('"sha256\\u0073":['));
    assert.deepEqual(decodeSha256File(Buffer.from(escaped), where), other);
  });

  it('lowercases uppercase digests; a repeated member counts once, the last, as in JSON.parse', () => {
    const s = sha256File(2);
    const upper = JSON.stringify({ ...plain(s), sha256s: hexes(s.sha256s).map((h) => h.toUpperCase()) });
    assert.deepEqual(decodeSha256File(Buffer.from(upper), where).sha256s, s.sha256s);
    const first = JSON.stringify(hexes(s.sha256s));
    const last = JSON.stringify([digest(9)]);
    const base = JSON.stringify({ ...plain(s), sha256s: undefined }).slice(1);
    assert.deepEqual(decodeSha256File(Buffer.from(`{"sha256s": ${first}, "sha256s": ${last}, ${base}`), where).sha256s, HashList.fromHex([digest(9)]));
    assert.deepEqual(decodeSha256File(Buffer.from(`{"sha256s": ["nope"], "sha256s": ${last}, ${base}`), where).sha256s, HashList.fromHex([digest(9)]));
    rejects(`{"sha256s": ${first}, "sha256s": null, ${base}`, 'P_sha256file: "sha256s" is missing or not a list');
  });

  it('names the first entry that is not a digest', () => {
    const s = sha256File(4);
    const text = encodeSha256File(s).toString();
    const h = s.sha256s.hexAt(2);
    const msg = 'P_sha256file: sha256s[2] is not a SHA-256 hex digest';
    rejects(text.replace(`"${h}"`, `"${'g'.repeat(64)}"`), msg);
    rejects(text.replace(`"${h}"`, `"${h.slice(1)}"`), msg);
    rejects(text.replace(`"${h}"`, `"${h}0"`), msg);
    rejects(text.replace(`"${h}"`, '12345'), msg);
    rejects(text.replace(`"${h}"`, '-1.5e3'), msg);
    rejects(text.replace(`"${h}"`, 'null'), msg);
    rejects(text.replace(`"${h}"`, 'true'), msg);
    rejects(text.replace(`"${h}"`, `["${h}"]`), msg);
    rejects(text.replace(`"${h}"`, `{"h": "${h}", "x": [1, "]"]}`), msg);
    rejects(text.replace(`"${h}"`, `"\\u00${h.slice(0, 2)}${h.slice(6)}"`), msg);
    rejects(text.replace(`"${h}"`, `"${h.slice(0, 30)}\\"${h.slice(32)}"`), msg);
    rejects(JSON.stringify({ ...plain(s), sha256s: [5] }), 'P_sha256file: sha256s[0] is not a SHA-256 hex digest');
  });

  it('says which member is missing or of the wrong kind, in the order it always has', () => {
    const doc = plain(sha256File(2));
    const missing = 'P_sha256file: "sha256s" is missing or not a list';
    rejects(JSON.stringify({ ...doc, sha256s: undefined }), missing);
    rejects(JSON.stringify({ ...doc, sha256s: null }), missing);
    rejects(JSON.stringify({ ...doc, sha256s: { 0: digest(0) } }), missing);
    rejects(JSON.stringify({ ...doc, sha256s: digest(0) }), missing);
    const chunk = 'P_sha256file: "chunk_size" (the sha block size) must be a positive integer';
    rejects(JSON.stringify({ ...doc, chunk_size: 0 }), chunk);
    rejects(JSON.stringify({ ...doc, chunk_size: '32768', sha256s: [5] }), chunk);
    rejects(JSON.stringify({ ...doc, backup_name: 5 }), 'P_sha256file: "backup_name" must be a string or null');
    rejects(JSON.stringify([doc]), 'P_sha256file: not a JSON object');
    rejects('"sha256s"', 'P_sha256file: not a JSON object');
  });

  it('reports a truncated document as not valid JSON, wherever it was cut', () => {
    const raw = encodeSha256File(sha256File(3));
    const list = raw.indexOf('"sha256s"');
    const cuts = [0, 1, 10, list + 5, list + 12, list + 13, list + 14, list + 20, list + 84, list + 85, list + 86, list + 90, raw.length - 30, raw.length - 1];
    for (const at of cuts) rejects(raw.subarray(0, at), 'P_sha256file: not valid JSON (Unexpected end of JSON input)');
  });

  it('reports broken JSON as not valid JSON, inside the list and around it', () => {
    const s = sha256File(2);
    const [a, b] = hexes(s.sha256s).map((h) => `"${h}"`) as [string, string];
    const text = encodeSha256File(s).toString();
    const broken = (from: string, to: string, at: (t: string) => number, what: string) => {
      const t = text.replace(from, to);
      assert.notEqual(t, text);
      rejects(t, `P_sha256file: not valid JSON (Unexpected ${what} at byte ${at(t)} in "sha256s")`);
    };
    broken(`${a},`, `${a},,`, (t) => t.indexOf(`${a},,`) + a.length + 1, "character ','");
    broken(`${b}\n`, `${b},\n`, (t) => t.indexOf(']'), "character ']'");
    broken(`${a},`, a, (t) => t.indexOf(b), `character '"'`);
    broken(`${a},`, `${a};`, (t) => t.indexOf(`${a};`) + a.length, "character ';'");
    broken(`${a},`, `${a},\u0000`, (t) => t.indexOf(`${a},`) + a.length + 1, 'byte 0x00');
    const noColon = text.replace('"sha256s": [', '"sha256s" [');
    rejects(noColon, `P_sha256file: not valid JSON (Unexpected character '[' at byte ${noColon.indexOf('"sha256s" [') + 10})`);
    // Outside the list, JSON.parse has its say.
    rejects(text.replace('"chunk_size": 32768', '"chunk_size": 32768,'), /^P_sha256file: not valid JSON \(.+\)$/s);
    rejects(text.replace('"version": "1.0.0"', '"version": 1.0.0.0'), /^P_sha256file: not valid JSON \(.+\)$/s);
    rejects(`${text}}`, /^P_sha256file: not valid JSON \(.+\)$/s);
    rejects(`\ufeff${text}`, /^P_sha256file: not valid JSON \(.+\)$/s);
    rejects('', 'P_sha256file: not valid JSON (Unexpected end of JSON input)');
  });

  it('counts the hashes of a sha256file as Cinder writes it from its size and its two ends alone', () => {
    const ends = (raw: Buffer, size: number, e: number) => countFromEnds(size, raw.subarray(0, e), raw.subarray(Math.max(0, raw.length - e)), where);
    for (const n of [1, 2, 3, 1000]) {
      const s = sha256File(n, { name: 'é"\n]', description: '\n  ]', volumeId: 'v ]"\n  ]' });
      const raw = encodeSha256File(s);
      const { sha256s: _, ...header } = s;
      const firstLine = raw.indexOf(`\n    "${s.sha256s.hexAt(0)}"`) + 1;
      for (const e of [raw.length, 2048, 1024]) assert.deepEqual(ends(raw, raw.length, e), { header, blocks: n, firstLine }, `${n} hashes, ends of ${e}`);
      // Its lines, read from there, are the list.
      const out = Buffer.alloc(n * 32);
      assert.equal(decodeHashLines(raw.subarray(firstLine, firstLine + n * 72 - 2), n, out, 0, true), -1);
      assert.ok(out.equals(s.sha256s.bytes));
      // A size that is not the frame and whole lines, or ends cut before the list: not told.
      for (const size of [raw.length - 1, raw.length + 1, raw.length + 71]) assert.equal(ends(raw, size, 1024), undefined, `size ${size}`);
      assert.equal(ends(raw, raw.length, 200), undefined);
    }
    const files = readdirSync(FIXTURES, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('_sha256file'));
    for (const f of files) {
      const raw = readFileSync(path.join(FIXTURES, f));
      assert.equal(ends(raw, raw.length, 1024)?.blocks, decodeWhole(raw, where).sha256s.length, f);
    }
    // Other layouts of the same document, and an empty list, are counted by reading them.
    const s = sha256File(5);
    for (const text of [JSON.stringify(plain(s)), JSON.stringify(plain(s), null, 2).replaceAll('\n', '\r\n'), stringEncoded(sha256File(0)).toString()]) {
      assert.equal(ends(Buffer.from(text), Buffer.byteLength(text), 1 << 20), undefined, text);
    }
    const text = encodeSha256File(s).toString();
    const broken = text.replace('"chunk_size": 32768', '"chunk_size": 0');
    assert.equal(ends(Buffer.from(broken), broken.length, 1 << 20), undefined);
    // White space of one line's length around the list would pass for one more hash.
    const line = ' '.repeat(72);
    for (const padded of [text.replace('{', `{${line}`), text.replace(/\}$/, `${line}}`), text.replace('"chunk_size"', `${line}"chunk_size"`)]) {
      assert.notEqual(padded, text);
      assert.equal(decodeWhole(Buffer.from(padded), where).sha256s.length, 5);
      assert.equal(ends(Buffer.from(padded), padded.length, 1024), undefined, padded);
    }
  });

  it('decodes hash lines as Cinder writes them, and names the first that is not one', () => {
    const s = sha256File(4);
    const raw = encodeSha256File(s);
    const at = raw.indexOf('\n    "') + 1;
    const lines = raw.subarray(at, at + 4 * 72 - 2);
    const out = Buffer.alloc(4 * 32);
    assert.equal(decodeHashLines(lines, 4, out, 0, true), -1);
    assert.ok(out.equals(s.sha256s.bytes));
    // Two lines in the middle of the list, into the middle of a larger list.
    const two = Buffer.alloc(5 * 32);
    assert.equal(decodeHashLines(lines.subarray(72, 216), 2, two, 64, false), -1);
    assert.ok(two.subarray(64, 128).equals(s.sha256s.bytes.subarray(32, 96)));
    // Not a line of the list: a digit, a quote, the indent, a separator, the last line's missing one.
    for (const [p, c, bad] of [[72 + 10, 'g', 1], [144 + 4, ' ', 2], [0, 'x', 0], [216 + 69, "'", 3], [72 + 70, ' ', 1], [144 + 71, ' ', 2]] as const) {
      const broken = Buffer.from(lines);
      broken.write(c, p, 'latin1');
      assert.equal(decodeHashLines(broken, 4, Buffer.alloc(4 * 32), 0, true), bad, `${c} at ${p}`);
    }
  });

  it('reads and writes sha256files larger than a JS string can be (7.6 million hashes, 547 MB)', { timeout: 120_000 }, () => {
    const n = 7_600_000;
    // 4093 distinct digests in turn: a hash written or read at the wrong line shows.
    const pool = HashList.fromHex(hashes(4093));
    const s = sha256File(0, { blockSize: 512, sha256s: new HashList(Buffer.alloc(n * 32).fill(pool.bytes)) });
    const raw = encodeSha256File(s);
    assert.equal(raw.length, sha256FileLength(s, n));
    assert.ok(raw.length > constants.MAX_STRING_LENGTH, `${raw.length} bytes`);
    // Around the list it is json.dumps's document; the list is checked by reading it back.
    const small = stringEncoded({ ...s, sha256s: pool.subarray(0, 2) });
    const start = small.indexOf(pool.hexAt(1));
    assert.ok(raw.subarray(0, start).equals(small.subarray(0, start)));
    const end = small.subarray(start + 64);
    assert.ok(raw.subarray(raw.length - end.length).equals(end));

    for (const back of [decodeWhole(raw, where), streamed(raw, 16 << 20)]) {
      assert.ok(back);
      assert.equal(back.blockSize, 512);
      assert.equal(back.sha256s.length, n);
      for (let i = 0; i < n; i++) {
        if (!back.sha256s.equalsAt(i, pool, i % pool.length)) assert.fail(`sha256s[${i}] read back as ${back.sha256s.hexAt(i)}`);
      }
    }
    // Written in pieces, the same bytes.
    const body = sha256FilePieces(s);
    assert.equal(body.length, raw.length);
    let at = 0;
    for (const piece of body.pieces()) {
      if (!piece.equals(raw.subarray(at, at + piece.length))) assert.fail(`the piece at byte ${at} differs`);
      at += piece.length;
    }
    assert.equal(at, raw.length);
  });
});
