/**
 * Serialises values exactly as Python's `json.dumps(value, sort_keys=True, indent=2)`
 * does (ensure_ascii on, separators "," and ": ", no trailing newline). Cinder writes
 * `_metadata` and `_sha256file` this way, and the repository format is byte-compatible.
 */
export type PyJson = null | boolean | number | string | PyJson[] | { [key: string]: PyJson };

const PLAIN = /^[\x20-\x21\x23-\x5b\x5d-\x7e]*$/;

function escapeString(s: string): string {
  // Most strings (hashes, names, numbers as text) need no escape: no per-character work.
  if (PLAIN.test(s)) return '"' + s + '"';
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c >= 0x20 && c <= 0x7e) out += s[i];
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    // UTF-16 code units are exactly Python's \uXXXX escapes (astral chars become surrogate pairs).
    else out += '\\u' + c.toString(16).padStart(4, '0');
  }
  return out + '"';
}

/** Python sorts str keys by code point; JS's default sort compares UTF-16 units. */
function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return (x.done ? 0 : 1) - (y.done ? 0 : 1);
    const d = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) throw new TypeError(`cannot serialise ${n} as JSON`);
  if (!Number.isInteger(n)) throw new TypeError(`non-integer ${n} has no exact Python repr here`);
  return String(n);
}

function encode(value: PyJson, indent: string): string {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'number') return formatNumber(value);
  if (typeof value === 'string') return escapeString(value);
  const inner = indent + '  ';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return '[\n' + value.map((v) => inner + encode(v, inner)).join(',\n') + '\n' + indent + ']';
  }
  const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort(compareCodePoints);
  if (keys.length === 0) return '{}';
  return (
    '{\n' +
    keys.map((k) => inner + escapeString(k) + ': ' + encode(value[k] as PyJson, inner)).join(',\n') +
    '\n' + indent + '}'
  );
}

export function pyJsonDumps(value: PyJson): string {
  return encode(value, '');
}
