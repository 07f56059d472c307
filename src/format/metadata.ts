import { constants } from 'node:buffer';
import { IntegrityError } from '../errors.js';
import {
  CLOSE_BRACKET, COMMA, JsonSyntaxError, OPEN_BRACKET, QUOTE, containerEnd, skipWhitespace, unexpectedAt, valueEnd, visitMembers,
} from './jsonbytes.js';
import { DIGEST_BYTES, HashList, decodeHexDigest, encodeHexDigest, type Digests } from './hash-list.js';
import { FORMAT_VERSION } from './naming.js';
import { pyJsonDumps, type PyJson } from './pyjson.js';

/** One data object as `_metadata` lists it: an extent of the volume, uncompressed length and MD5. */
export interface ObjectEntry {
  name: string;
  offset: number;
  length: number;
  md5: string;
  compression: string;
}

/** The fields `_metadata` and `_sha256file` share. */
export interface BackupHeader {
  version: string;
  backupId: string;
  volumeId: string;
  name: string | null;
  description: string | null;
  createdAt: string;
}

/** The `<prefix>_metadata` object: the commit point of a backup. */
export interface BackupMetadata extends BackupHeader {
  parentId: string | null;
  objects: ObjectEntry[];
  volumeMeta: string | null;
  /** Present only when a writer set it; kept verbatim. */
  extraMetadata?: PyJson;
}

export function encodeMetadata(m: BackupMetadata): Buffer {
  const doc: { [k: string]: PyJson } = {
    backup_description: m.description,
    backup_id: m.backupId,
    backup_name: m.name,
    created_at: m.createdAt,
    objects: m.objects.map((o) => ({
      [o.name]: { compression: o.compression, length: o.length, md5: o.md5, offset: o.offset },
    })),
    parent_id: m.parentId,
    version: m.version,
    volume_id: m.volumeId,
    volume_meta: m.volumeMeta,
  };
  if (m.extraMetadata) doc.extra_metadata = m.extraMetadata;
  return Buffer.from(pyJsonDumps(doc), 'utf8');
}

type Where = { backupId?: string; object: string };

function fail(where: Where, what: string): never {
  throw new IntegrityError(`${where.object}: ${what}`, where);
}

function parseJsonObject(raw: Buffer, where: Where): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    fail(where, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) fail(where, 'not a JSON object');
  return doc as Record<string, unknown>;
}

function optString(doc: Record<string, unknown>, key: string, where: Where): string | null {
  const v = doc[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') fail(where, `"${key}" must be a string or null`);
  return v;
}

function reqString(doc: Record<string, unknown>, key: string, where: Where): string {
  const v = doc[key];
  if (typeof v !== 'string') fail(where, `"${key}" is missing or not a string`);
  return v;
}

function nonNegInt(v: unknown, what: string, where: Where): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(where, `${what} must be a non-negative integer`);
  return v;
}

/** Parses and validates `_metadata`; unknown keys are ignored as Cinder ignores them. */
export function decodeMetadata(raw: Buffer, where: Where): BackupMetadata {
  const doc = parseJsonObject(raw, where);
  const version = reqString(doc, 'version', where);
  if (version !== FORMAT_VERSION) fail(where, `No support to restore backup version ${version}`);
  if (!Array.isArray(doc.objects)) fail(where, '"objects" is missing or not a list');
  const objects = (doc.objects as unknown[]).map((entry, i): ObjectEntry => {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry) || Object.keys(entry).length !== 1) {
      fail(where, `objects[${i}] must be an object with exactly one key`);
    }
    const [name, info] = Object.entries(entry as Record<string, unknown>)[0]!;
    if (typeof info !== 'object' || info === null) fail(where, `objects[${i}] (${name}) has no description`);
    const o = info as Record<string, unknown>;
    const md5 = o.md5;
    if (typeof md5 !== 'string' || !/^[0-9a-f]{32}$/i.test(md5)) fail(where, `objects[${i}] (${name}) has no valid md5`);
    if (typeof o.compression !== 'string' && o.compression !== null && o.compression !== undefined) {
      fail(where, `objects[${i}] (${name}) has an invalid compression label`);
    }
    return {
      name,
      offset: nonNegInt(o.offset, `objects[${i}] (${name}) offset`, where),
      length: nonNegInt(o.length, `objects[${i}] (${name}) length`, where),
      md5: md5.toLowerCase(),
      compression: (o.compression as string | null | undefined) ?? 'none',
    };
  });
  const volumeMeta = doc.volume_meta;
  return {
    version,
    backupId: reqString(doc, 'backup_id', where),
    volumeId: reqString(doc, 'volume_id', where),
    name: optString(doc, 'backup_name', where),
    description: optString(doc, 'backup_description', where),
    createdAt: optString(doc, 'created_at', where) ?? '',
    parentId: optString(doc, 'parent_id', where),
    objects,
    volumeMeta: typeof volumeMeta === 'string' ? volumeMeta : volumeMeta == null ? null : JSON.stringify(volumeMeta),
    ...(doc.extra_metadata !== undefined ? { extraMetadata: doc.extra_metadata as PyJson } : {}),
  };
}

/** The `<prefix>_sha256file` object: one SHA-256 per sha block of the whole volume. */
export interface Sha256File extends BackupHeader {
  /** The sha block size (Cinder calls it chunk_size). */
  blockSize: number;
  sha256s: HashList;
}

/**
 * The document around the list, split where the hashes go: `head` ends with the list's `[`,
 * `tail` starts with its `]`. Python prints everything but the list; the list is one line of
 * HASH_LINE.length bytes per hash, the last without its ",\n".
 */
function sha256FileFrame(s: Omit<Sha256File, 'sha256s'>): { head: string; tail: string } {
  const text = pyJsonDumps({
    backup_description: s.description,
    backup_id: s.backupId,
    backup_name: s.name,
    chunk_size: s.blockSize,
    created_at: s.createdAt,
    sha256s: [],
    version: s.version,
    volume_id: s.volumeId,
  });
  // Strings are printed escaped, so a line break followed by this member occurs only once.
  const at = text.indexOf(EMPTY_LIST_MEMBER) + EMPTY_LIST_MEMBER.length - 1;
  return { head: text.slice(0, at), tail: text.slice(at) };
}

const EMPTY_LIST_MEMBER = '\n  "sha256s": []';
const HASH_LINE = Buffer.from(`    "${'0'.repeat(64)}",\n`, 'latin1');
const HASH_AT = 5;

/** The byte length of the sha256file `sha256FilePieces` writes for `count` hashes. */
export function sha256FileLength(s: Omit<Sha256File, 'sha256s'>, count: number): number {
  const { head, tail } = sha256FileFrame(s);
  return Buffer.byteLength(head) + Buffer.byteLength(tail) + (count === 0 ? 0 : count * HASH_LINE.length + 2);
}

const LIST_OPEN = Buffer.from(EMPTY_LIST_MEMBER.slice(0, -1));
const LIST_CLOSE = Buffer.from('\n  ]');

/**
 * How many hashes a sha256file of `size` bytes lists, told from its `first` and `last` bytes
 * alone when they are exactly what `sha256FilePieces` (and Cinder) writes around the list: its
 * lines are then HASH_LINE.length bytes each. Undefined when they are not; the list must then be
 * read to be counted.
 */
export function countFromEnds(size: number, first: Buffer, last: Buffer, where: Where): Sha256FileShape | undefined {
  const open = first.indexOf(LIST_OPEN);
  const close = last.lastIndexOf(LIST_CLOSE);
  if (open < 0 || close < 0) return undefined;
  let header: Omit<Sha256File, 'sha256s'>;
  try {
    const { sha256s: _list, ...rest } = decodeSha256File(
      Buffer.concat([first.subarray(0, open + LIST_OPEN.length), last.subarray(close + LIST_CLOSE.length - 1)]), where);
    header = rest;
  } catch {
    return undefined;
  }
  const { head, tail } = sha256FileFrame(header);
  const before = Buffer.from(`${head}\n${HASH_LINE.subarray(0, HASH_AT).toString('latin1')}`, 'utf8');
  const after = Buffer.from(`"\n  ${tail}`, 'utf8');
  const lines = size - Buffer.byteLength(head) - Buffer.byteLength(tail) - 2;
  const blocks = lines / HASH_LINE.length;
  if (!(Number.isSafeInteger(blocks) && blocks > 0)) return undefined;
  if (!first.subarray(0, before.length).equals(before) || !last.subarray(last.length - after.length).equals(after)) return undefined;
  return { header, blocks, firstLine: Buffer.byteLength(head) + 1 };
}

/** What the ends of a sha256file as Cinder writes it tell: its header, its count, where its lines are. */
export interface Sha256FileShape {
  header: Omit<Sha256File, 'sha256s'>;
  blocks: number;
  /** The offset of the first hash line; every line is SHA256FILE_LINE_BYTES long, the last one without its ",\n". */
  firstLine: number;
}

/** Bytes of one line of the list as Cinder writes it: `    "<64 hex digits>",\n`. */
export const SHA256FILE_LINE_BYTES = HASH_LINE.length;

/**
 * Decodes `count` lines of the list as Cinder writes it, from `text`, into packed digests at `to`
 * in `out`: the index (from 0) of the first line that is not one, or -1. The list's last line is
 * the one without a separator when `endsList`.
 */
export function decodeHashLines(text: Uint8Array, count: number, out: Uint8Array, to: number, endsList: boolean): number {
  for (let i = 0; i < count; i++) {
    const p = i * HASH_LINE.length;
    const last = endsList && i === count - 1;
    const ok = text[p] === 0x20 && text[p + 1] === 0x20 && text[p + 2] === 0x20 && text[p + 3] === 0x20 && text[p + 4] === QUOTE &&
      text[p + 69] === QUOTE && (last || (text[p + 70] === COMMA && text[p + 71] === 0x0a)) &&
      decodeHexDigest(text, p + HASH_AT, out, to + i * DIGEST_BYTES);
    if (!ok) return i;
  }
  return -1;
}

/**
 * The most hashes a sha256file with this header can list in an object of `maxObjectBytes` (a
 * store's limit; none: no bound, the list is never held whole).
 */
export function sha256FileCapacity(s: Omit<Sha256File, 'sha256s'>, maxObjectBytes = Infinity): number {
  const frame = sha256FileLength(s, 0) + 2;
  return Math.max(0, Math.floor((maxObjectBytes - frame) / HASH_LINE.length));
}

/** Bytes of hash lines per piece of the sha256file (about; a piece holds whole lines). */
export const SHA256FILE_PIECE_BYTES = 8 * 1024 * 1024;

/**
 * The sha256file as Cinder writes it (`json.dumps(sort_keys=True, indent=2)`, lowercase hex as
 * `hexdigest()` gives), a piece at a time: the text of a large volume's is gigabytes, several
 * times its packed list, and is never held whole.
 */
export function sha256FilePieces(
  s: Omit<Sha256File, 'sha256s'> & { sha256s: Digests },
  pieceBytes = SHA256FILE_PIECE_BYTES,
): { length: number; pieces(): Iterable<Buffer> } {
  const { head, tail } = sha256FileFrame(s);
  const hashes = s.sha256s;
  const n = hashes.length;
  const perPiece = Math.max(1, Math.floor(pieceBytes / HASH_LINE.length));
  return {
    length: sha256FileLength(s, n),
    *pieces() {
      if (n === 0) {
        yield Buffer.from(head + tail, 'utf8');
        return;
      }
      yield Buffer.from(head + '\n', 'utf8');
      for (let from = 0; from < n; from += perPiece) {
        const to = Math.min(n, from + perPiece);
        const last = to === n;
        // Every line but the very last ends with ",\n"; the last stops after its closing quote.
        const lines = (to - from) * HASH_LINE.length;
        const end = last ? Buffer.byteLength(tail) + 3 : 0;
        const out = Buffer.allocUnsafe(lines - (last ? 2 : 0) + end);
        out.fill(HASH_LINE, 0, lines - (last ? 2 : 0));
        encodeHashLines(hashes.read(from, to), to - from, out);
        if (last) out.write('\n  ' + tail, lines - 2, 'utf8');
        yield out;
      }
    },
  };
}

/** Writes `count` digests as hex into the hash lines laid out in `out` (a plain loop, which V8 optimizes where a generator's is not). */
function encodeHashLines(digests: Uint8Array, count: number, out: Buffer): void {
  for (let i = 0; i < count; i++) encodeHexDigest(digests, i * DIGEST_BYTES, out, i * HASH_LINE.length + HASH_AT);
}

/** The whole sha256file in one Buffer (for small ones; `sha256FilePieces` writes any size). */
export function encodeSha256File(s: Sha256File): Buffer {
  return Buffer.concat([...sha256FilePieces(s).pieces()]);
}

/** A `sha256s` list at [start, end): its digests, up to the first entry that is not one (`bad`, its index). */
interface ListRead {
  start: number;
  end: number;
  hashes: HashList;
  bad?: number;
}

/** The fewest bytes an entry of the list takes: its quoted digits and a separator (or the `]`). */
const ENTRY_BYTES = 2 * DIGEST_BYTES + 3;

/**
 * Reads the list whose `[` is at `start`: 64-hex strings (either case), separated by commas and
 * whitespace, packed straight from the bytes. An entry of any other kind ends the reading, the
 * rest of the list being skipped.
 */
function readHashList(raw: Buffer, start: number): ListRead {
  let p = skipWhitespace(raw, start + 1);
  if (raw[p] === CLOSE_BRACKET) return { start, end: p + 1, hashes: new HashList() };
  // Room for as many entries as the rest of the text could hold; the pages of what is not
  // written are never touched, so they take no memory.
  const out = Buffer.allocUnsafe(Math.floor((raw.length - p) / ENTRY_BYTES + 1) * DIGEST_BYTES);
  const read = (n: number) => new HashList(out.subarray(0, n * DIGEST_BYTES));
  for (let n = 0; ; ) {
    // The closing quote is looked at first: every digit before it is then inside the text.
    if (!(raw[p + 65] === QUOTE && raw[p] === QUOTE && decodeHexDigest(raw, p + 1, out, n * DIGEST_BYTES))) {
      // A value of another kind is a wrong entry; no value at all is broken JSON.
      if (!VALUE_START[raw[p] ?? 0]) throw unexpectedAt(raw, p, ` in "sha256s"`);
      return { start, end: containerEnd(raw, valueEnd(raw, p), 1), hashes: read(n), bad: n };
    }
    n++;
    p = skipWhitespace(raw, p + 66);
    const c = raw[p];
    if (c === COMMA) p = skipWhitespace(raw, p + 1);
    else if (c === CLOSE_BRACKET) return { start, end: p + 1, hashes: read(n) };
    else throw unexpectedAt(raw, p, ` in "sha256s"`);
  }
}

/** Bytes a JSON value can start with. */
const VALUE_START = new Uint8Array(256);
for (const c of '"-0123456789tfn[{') VALUE_START[c.charCodeAt(0)] = 1;

const EMPTY_LIST = Buffer.from('[]');

/**
 * Parses the sha256file. Its `sha256s` list is packed straight from the bytes (the document of
 * a large volume is larger than a JS string may be); the rest, small, goes through JSON.parse with the
 * list cut out. Any JSON layout is accepted; the last `sha256s` member counts, as in JSON.parse.
 */
export function decodeSha256File(raw: Buffer, where: Where): Sha256File {
  const lists: ListRead[] = [];
  let isObject: boolean;
  try {
    isObject = visitMembers(raw, (name, start) => {
      if (name !== 'sha256s' || raw[start] !== OPEN_BRACKET) return undefined;
      const list = readHashList(raw, start);
      lists.push(list);
      return list.end;
    });
  } catch (err) {
    if (err instanceof JsonSyntaxError) fail(where, `not valid JSON (${err.message})`);
    throw err;
  }
  let doc: Record<string, unknown>;
  if (!isObject) {
    if (raw.length > constants.MAX_STRING_LENGTH) fail(where, 'not a JSON object');
    doc = parseJsonObject(raw, where);
  } else {
    const parts: Buffer[] = [];
    let from = 0;
    for (const list of lists) {
      parts.push(raw.subarray(from, list.start), EMPTY_LIST);
      from = list.end;
    }
    parts.push(raw.subarray(from));
    const rest = lists.length ? Buffer.concat(parts) : raw;
    if (rest.length > constants.MAX_STRING_LENGTH) fail(where, 'too large outside its "sha256s" list');
    doc = parseJsonObject(rest, where);
  }
  const blockSize = doc.chunk_size;
  if (typeof blockSize !== 'number' || !Number.isSafeInteger(blockSize) || blockSize <= 0) {
    fail(where, '"chunk_size" (the sha block size) must be a positive integer');
  }
  // An array here is the last list read (every list was cut to `[]`).
  const list = lists.at(-1);
  if (!Array.isArray(doc.sha256s) || !list) fail(where, '"sha256s" is missing or not a list');
  if (list.bad !== undefined) fail(where, `sha256s[${list.bad}] is not a SHA-256 hex digest`);
  return {
    version: typeof doc.version === 'string' ? doc.version : FORMAT_VERSION,
    backupId: typeof doc.backup_id === 'string' ? doc.backup_id : '',
    volumeId: typeof doc.volume_id === 'string' ? doc.volume_id : '',
    name: optString(doc, 'backup_name', where),
    description: optString(doc, 'backup_description', where),
    createdAt: optString(doc, 'created_at', where) ?? '',
    blockSize,
    sha256s: list.hashes,
  };
}
