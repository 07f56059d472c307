/**
 * Walks JSON text held in a Buffer without making it one string, for documents larger than a
 * JS string can hold. It finds where values lie and checks only the structure it needs for
 * that (brackets, quotes, separators of the top-level object); a caller parses the parts it
 * keeps, which validates them.
 */

/** The text is not JSON; the message says where. */
export class JsonSyntaxError extends Error {
  override readonly name = 'JsonSyntaxError';
}

export const QUOTE = 0x22;
export const COMMA = 0x2c;
export const COLON = 0x3a;
export const BACKSLASH = 0x5c;
export const OPEN_BRACKET = 0x5b;
export const CLOSE_BRACKET = 0x5d;
export const OPEN_BRACE = 0x7b;
export const CLOSE_BRACE = 0x7d;

/** Bytes that end a number or a literal (true, false, null). */
const DELIMITER = new Uint8Array(256);
for (const c of [0x20, 0x09, 0x0a, 0x0d, COMMA, CLOSE_BRACKET, CLOSE_BRACE]) DELIMITER[c] = 1;

export function endOfInput(): JsonSyntaxError {
  // V8's JSON.parse words a truncated document the same way.
  return new JsonSyntaxError('Unexpected end of JSON input');
}

/** The error for the byte at `p` (or for the end of the text, when `p` is past it). */
export function unexpectedAt(raw: Buffer, p: number, context = ''): JsonSyntaxError {
  if (p >= raw.length) return endOfInput();
  const c = raw[p]!;
  const what = c > 0x20 && c < 0x7f ? `character '${String.fromCharCode(c)}'` : `byte 0x${c.toString(16).padStart(2, '0')}`;
  return new JsonSyntaxError(`Unexpected ${what} at byte ${p}${context}`);
}

/** The first position at or after `p` that is not JSON whitespace. */
export function skipWhitespace(raw: Buffer, p: number): number {
  const n = raw.length;
  while (p < n) {
    const c = raw[p]!;
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    p++;
  }
  return p;
}

/** One past the closing quote of the string whose opening quote is at `p`. */
export function stringEnd(raw: Buffer, p: number): number {
  let from = p + 1;
  for (;;) {
    const q = raw.indexOf(QUOTE, from);
    if (q < 0) throw endOfInput();
    // The quote closes the string unless an odd number of backslashes precede it.
    let b = q;
    while (b > p + 1 && raw[b - 1] === BACKSLASH) b--;
    if ((q - b) % 2 === 0) return q + 1;
    from = q + 1;
  }
}

/**
 * One past the end of the array or object whose contents continue at `p`, `depth` levels
 * inside it. Brackets are matched, not checked for kind.
 */
export function containerEnd(raw: Buffer, p: number, depth: number): number {
  const n = raw.length;
  for (; p < n; p++) {
    const c = raw[p]!;
    if (c === QUOTE) p = stringEnd(raw, p) - 1;
    else if (c === OPEN_BRACKET || c === OPEN_BRACE) depth++;
    else if ((c === CLOSE_BRACKET || c === CLOSE_BRACE) && --depth === 0) return p + 1;
  }
  throw endOfInput();
}

/** One past the end of the value starting at `p`. */
export function valueEnd(raw: Buffer, p: number): number {
  const c = raw[p];
  if (c === undefined) throw endOfInput();
  if (c === QUOTE) return stringEnd(raw, p);
  if (c === OPEN_BRACKET || c === OPEN_BRACE) return containerEnd(raw, p + 1, 1);
  let q = p;
  while (q < raw.length && !DELIMITER[raw[q]!]) q++;
  if (q === p) throw unexpectedAt(raw, p);
  return q;
}

function memberName(raw: Buffer, start: number, end: number): string | undefined {
  let plain = true;
  for (let i = start + 1; i < end - 1; i++) {
    const c = raw[i]!;
    if (c === BACKSLASH || c >= 0x80) {
      plain = false;
      break;
    }
  }
  if (plain) return raw.toString('latin1', start + 1, end - 1);
  try {
    const name: unknown = JSON.parse(raw.toString('utf8', start, end));
    return typeof name === 'string' ? name : undefined;
  } catch {
    return undefined; // the caller's JSON.parse of the document reports it
  }
}

/**
 * Visits the members of the object `raw` holds, in order. `visit(name, start)` gets each
 * member's name and the position where its value starts, and returns one past the value's end,
 * or undefined to have the value skipped. Returns false, visiting nothing, when the text does
 * not start with an object; what follows the object's closing brace is not looked at.
 */
export function visitMembers(raw: Buffer, visit: (name: string | undefined, start: number) => number | undefined): boolean {
  let p = skipWhitespace(raw, 0);
  if (raw[p] !== OPEN_BRACE) return false;
  p = skipWhitespace(raw, p + 1);
  if (raw[p] === CLOSE_BRACE) return true;
  for (;;) {
    if (raw[p] !== QUOTE) throw unexpectedAt(raw, p);
    const nameEnd = stringEnd(raw, p);
    const name = memberName(raw, p, nameEnd);
    p = skipWhitespace(raw, nameEnd);
    if (raw[p] !== COLON) throw unexpectedAt(raw, p);
    p = skipWhitespace(raw, p + 1);
    p = skipWhitespace(raw, visit(name, p) ?? valueEnd(raw, p));
    if (raw[p] === CLOSE_BRACE) return true;
    if (raw[p] !== COMMA) throw unexpectedAt(raw, p);
    p = skipWhitespace(raw, p + 1);
  }
}
