/**
 * Reading a sha256file a piece at a time, so that a large volume's (gigabytes of text) is never
 * held whole: the `sha256s` list is packed as its bytes arrive, and only the small document
 * around it is kept and parsed at the end.
 *
 * The pieces are read in the one layout writers use: an object whose `sha256s` member is a
 * list of 64-hex strings, written once. Anything else (a wrong entry, a second list, broken
 * text, a missing field) is not decided here: the reader gives up (`ended` returns undefined)
 * and the caller reads the whole object with `decodeSha256File`, which accepts any layout and
 * words the error with its place in the object.
 */
import { DIGEST_BYTES, HashList, decodeHexDigest } from './hash-list.js';
import { CLOSE_BRACKET, COMMA, JsonSyntaxError, OPEN_BRACKET, QUOTE, endOfInput, skipWhitespace, visitMembers } from './jsonbytes.js';
import { decodeSha256File, type Sha256File } from './metadata.js';

/** The most bytes kept around the list; a document with more is read whole. */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** Bytes of one entry from its opening quote to one past its closing quote. */
const ENTRY_TEXT = 2 * DIGEST_BYTES + 2;

/** The fewest bytes an entry of the list takes: its quoted digits and a separator (or the `]`). */
const ENTRY_BYTES = ENTRY_TEXT + 1;

const SHA256S = Buffer.from('sha256s');
const BACKSLASH = Buffer.from('\\');

type Where = { backupId?: string; object: string };

/** What the reader read: the document but its list, how many hashes the list holds, and them when kept. */
export interface Sha256FileRead {
  header: Omit<Sha256File, 'sha256s'>;
  blocks: number;
  hashes?: HashList;
}

/** Where the reader is in the document. */
type State = 'head' | 'value' | 'value-or-end' | 'separator' | 'tail' | 'given-up';

/** Thrown by the member visitor to stop at the list's `[`. */
class ListFound {
  constructor(readonly at: number) {}
}

export class Sha256FileReader {
  private state: State = 'head';
  /** The document before the list (up to its `[`), then after it (from its `]`). */
  private head: Buffer[] = [];
  private headBytes = 0;
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** The start of an entry cut by the end of a piece. */
  private carry: Buffer = Buffer.alloc(0);
  private out: Buffer = Buffer.alloc(0);
  private count = 0;
  /** Bytes fed before the current piece. */
  private fed = 0;

  /**
   * `size`: the whole object's, which bounds the list's length. `keep`: false to only count
   * the hashes (each is still checked to be one).
   */
  constructor(private readonly size: number, private readonly keep = true) {}

  /** Takes the next piece of the object. */
  feed(piece: Buffer): void {
    const at = this.fed;
    this.fed += piece.length;
    if (this.state === 'given-up') return;
    if (this.state === 'head') {
      const start = this.findList(piece);
      if (start === undefined) return;
      piece = start.rest;
      this.startList(at + start.offset);
    }
    if (this.state === 'tail') return this.keepTail(piece);
    this.readEntries(piece);
  }

  /**
   * The sha256file, once every piece has been fed; undefined when the pieces are not in the
   * layout read here (the whole object must be decoded instead).
   */
  ended(where: Where): Sha256FileRead | undefined {
    if (this.state !== 'tail' || this.fed !== this.size) return undefined;
    const rest = Buffer.concat(this.tail);
    // A second list after the first would be the one that counts (its name may be escaped).
    if (rest.includes(SHA256S) || rest.includes(BACKSLASH)) return undefined;
    let doc: Sha256File;
    try {
      doc = decodeSha256File(Buffer.concat([...this.head, Buffer.from('[]'), rest]), where);
    } catch {
      return undefined; // read whole, its error says where in the object
    }
    const { sha256s: _, ...header } = doc;
    return { header, blocks: this.count, ...(this.keep ? { hashes: new HashList(this.out.subarray(0, this.count * DIGEST_BYTES)) } : {}) };
  }

  /** Whether the pieces are not in the layout read here: the rest need not be fed. */
  get givenUp(): boolean {
    return this.state === 'given-up';
  }

  private giveUp(): undefined {
    this.state = 'given-up';
    this.head = [];
    this.tail = [];
    this.out = Buffer.alloc(0);
    return undefined;
  }

  /** Looks for the list's `[` in the document so far: the rest of `piece` after it, if found. */
  private findList(piece: Buffer): { offset: number; rest: Buffer } | undefined {
    this.head.push(piece);
    this.headBytes += piece.length;
    const text = this.head.length === 1 ? piece : Buffer.concat(this.head);
    // Nothing but white space yet: no telling what follows.
    if (skipWhitespace(text, 0) === text.length) return undefined;
    let found: number | undefined;
    try {
      visitMembers(text, (name, start) => {
        if (name === 'sha256s' && text[start] === OPEN_BRACKET) throw new ListFound(start);
        return undefined;
      });
      // An object or text with no list in it.
      this.giveUp();
      return undefined;
    } catch (err) {
      if (err instanceof ListFound) found = err.at;
      else if (!(err instanceof JsonSyntaxError)) throw err;
      else if (err.message !== endOfInput().message) return this.giveUp();
    }
    if (found === undefined) {
      if (this.headBytes > MAX_FRAME_BYTES) this.giveUp();
      return undefined;
    }
    this.head = [Buffer.from(text.subarray(0, found))];
    const offset = found + 1 - (this.headBytes - piece.length);
    return { offset, rest: piece.subarray(offset) };
  }

  private startList(listAt: number): void {
    this.state = 'value-or-end';
    // Room for as many entries as the rest of the object could hold; the pages of what is not
    // written are never touched, so they take no memory. Counting needs room for one.
    this.out = Buffer.allocUnsafe(this.keep ? Math.floor((this.size - listAt) / ENTRY_BYTES + 1) * DIGEST_BYTES : DIGEST_BYTES);
  }

  private readEntries(piece: Buffer): void {
    if (this.carry.length) {
      // The cut entry, completed from the start of this piece.
      const joined = Buffer.concat([this.carry, piece.subarray(0, ENTRY_TEXT)]);
      const carried = this.carry.length;
      this.carry = Buffer.alloc(0);
      const p = this.scan(joined, 0, carried);
      if (p === undefined) return;
      piece = piece.subarray(p - carried);
    }
    this.scan(piece, 0, piece.length);
  }

  /**
   * Reads entries and separators from `p` while they start before `stop`; returns where it
   * stopped, or undefined when the list ended, the reader gave up or the text ran out.
   */
  private scan(text: Buffer, p: number, stop: number): number | undefined {
    const out = this.out;
    for (;;) {
      p = skipWhitespace(text, p);
      if (p >= stop) return p;
      const c = text[p];
      if (this.state === 'separator') {
        if (c === COMMA) this.state = 'value';
        else if (c === CLOSE_BRACKET) return this.endList(text.subarray(p + 1));
        else return this.giveUp();
        p++;
        continue;
      }
      if (c === CLOSE_BRACKET && this.state === 'value-or-end') return this.endList(text.subarray(p + 1));
      if (c !== QUOTE) return this.giveUp();
      if (p + ENTRY_TEXT > text.length) {
        this.carry = Buffer.from(text.subarray(p));
        return undefined;
      }
      const to = this.keep ? this.count * DIGEST_BYTES : 0;
      if (text[p + ENTRY_TEXT - 1] !== QUOTE || to >= out.length || !decodeHexDigest(text, p + 1, out, to)) return this.giveUp();
      this.count++;
      this.state = 'separator';
      p += ENTRY_TEXT;
    }
  }

  private endList(rest: Buffer): undefined {
    this.state = 'tail';
    this.keepTail(rest);
    return undefined;
  }

  private keepTail(piece: Buffer): void {
    this.tail.push(Buffer.from(piece));
    this.tailBytes += piece.length;
    if (this.tailBytes > MAX_FRAME_BYTES) this.giveUp();
  }
}
