import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pyJsonDumps } from '../../src/format/pyjson.js';

// Expected strings are what CPython's json.dumps(v, sort_keys=True, indent=2) prints.
describe('pyJsonDumps matches json.dumps(sort_keys=True, indent=2)', () => {
  it('nests objects and lists with two-space indents and sorted keys', () => {
    assert.equal(
      pyJsonDumps({ b: [1, { z: null, a: true }], a: 'x', c: [], d: {} }),
      '{\n  "a": "x",\n  "b": [\n    1,\n    {\n      "a": true,\n      "z": null\n    }\n  ],\n  "c": [],\n  "d": {}\n}',
    );
  });
  it('escapes like ensure_ascii', () => {
    assert.equal(pyJsonDumps('é日本"\\\t\n\r\b\f\u0001\u007f/'), '"\\u00e9\\u65e5\\u672c\\"\\\\\\t\\n\\r\\b\\f\\u0001\\u007f/"');
    assert.equal(pyJsonDumps('😀'), '"\\ud83d\\ude00"');
  });
  it('sorts keys by code point, not UTF-16 unit', () => {
    assert.equal(pyJsonDumps({ '\uffff': 1, '😀': 2 }), '{\n  "\\uffff": 1,\n  "\\ud83d\\ude00": 2\n}');
  });
  it('refuses values Python would print differently', () => {
    assert.throws(() => pyJsonDumps(1.5));
    assert.throws(() => pyJsonDumps(Number.NaN));
  });
});
