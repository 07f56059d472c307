import { createRequire } from 'node:module';
import * as zlib from 'node:zlib';
import pako from 'pako';
import * as zstd from 'zstd-napi';
import type { Algorithm, Codec } from './codec.js';

const require = createRequire(import.meta.url);

/**
 * zlib: Python's `zlib.compress(data)` (level 6, RFC 1950). pako reproduces C zlib's
 * deflate bit for bit; Node's bundled zlib fork makes different (valid) streams.
 */
const zlibCodec: Codec = {
  algorithm: 'zlib',
  compress: (data) => pako.deflate(data, { level: 6 }),
  compressInto: (data, into) => placed(pako.deflate(data, { level: 6 }), into),
  // One output buffer the size of `into` (one byte more, to see an overlong stream): no list
  // of 16 KiB pieces concatenated into a second copy of the object.
  decompress(data, into) {
    const overlong = () => new Error(`the stream holds more than ${into.length} bytes`);
    let out: Buffer;
    try {
      // Stops at one byte more than expected: a damaged stream is not inflated whole first.
      out = zlib.inflateSync(data, { chunkSize: Math.max(64, into.length + 1), maxOutputLength: into.length + 1 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw overlong();
      throw err;
    }
    if (out.length > into.length) throw overlong();
    into.set(out);
    return out.length;
  },
};

/** compressInto for encoders that make their own output: copy it when it fits. */
function placed(out: Uint8Array, into: Uint8Array): number | null {
  if (out.length > into.length) return null;
  into.set(out);
  return out.length;
}

const zstdBinding = require('zstd-napi/binding') as typeof import('zstd-napi/binding.js');
let dctx: InstanceType<typeof zstdBinding.DCtx> | undefined;
let cctx: InstanceType<typeof zstdBinding.CCtx> | undefined;

function zstdCCtx(): InstanceType<typeof zstdBinding.CCtx> {
  if (!cctx) {
    cctx = new zstdBinding.CCtx();
    cctx.setParameter(zstdBinding.CParameter.compressionLevel, 3);
  }
  return cctx;
}

/** zstd: one frame with the content size in its header, level 3 (python-zstd's default). */
const zstdCodec: Codec = {
  algorithm: 'zstd',
  compress: (data) => zstd.compress(data, { compressionLevel: 3 }),
  compressInto(data, into) {
    try {
      return zstdCCtx().compress2(into, data);
    } catch (err) {
      if (/too small/i.test((err as Error).message)) return null;
      throw err;
    }
  },
  decompress: (data, into) => (dctx ??= new zstdBinding.DCtx()).decompress(into, data),
};

interface Bz2Compressor {
  compressBZ2(data: Uint8Array, blockSize: number, workFactor: number): { error: number; output: Uint8Array };
}
/** @foxglove/wasm-bz2 0.3.0 (pinned): its emscripten module, driven directly to decode into caller memory. */
interface Bz2Module {
  HEAPU8: Uint8Array;
  _malloc(size: number): number;
  _free(ptr: number): void;
  decompress(dst: number, dstSize: number, src: number, srcSize: number, small: number): { code: number; error?: string; buffer?: Uint8Array };
}
interface Bz2Decompressor {
  module: Bz2Module;
}

/** Decodes `data` inside the wasm heap and copies the result once, into `into`. */
function bz2Decompress(m: Bz2Module, data: Uint8Array, into: Uint8Array): number {
  const src = m._malloc(data.length);
  const dst = m._malloc(into.length);
  try {
    m.HEAPU8.set(data, src); // HEAPU8 read after malloc: the heap may have grown
    const { code, error, buffer } = m.decompress(dst, into.length, src, data.length, 0);
    if (code !== 0 || !buffer) throw new Error(`bzip2 decompression failed: ${code} (${error ?? 'unknown'})`);
    into.set(buffer);
    return buffer.length;
  } finally {
    m._free(src);
    m._free(dst);
  }
}

async function loadBz2(): Promise<Codec> {
  const factory = require('libbzip2-wasm') as () => { then(fn: (m: Bz2Compressor) => void): void };
  // The emscripten module is a thenable resolving to itself: unwrap it by hand.
  const compressor = await new Promise<Bz2Compressor>((resolve) =>
    factory().then((m) => {
      delete (m as { then?: unknown }).then;
      resolve(m);
    }),
  );
  const Bzip2 = require('@foxglove/wasm-bz2') as { init(): Promise<Bz2Decompressor> };
  const decompressor = await Bzip2.init();
  const compress = (data: Uint8Array): Uint8Array => {
    const r = compressor.compressBZ2(data, 9, 0);
    if (r.error !== 0) throw new Error(`bzip2 compression failed (code ${r.error})`);
    return Buffer.from(r.output);
  };
  return {
    algorithm: 'bz2',
    compress,
    compressInto: (data, into) => placed(compress(data), into),
    decompress: (data, into) => bz2Decompress(decompressor.module, data, into),
  };
}

let bz2: Promise<Codec> | undefined;

/** Loads (once) and returns the codec for an algorithm. */
export async function loadCodec(algorithm: Algorithm): Promise<Codec> {
  switch (algorithm) {
    case 'zlib':
      return zlibCodec;
    case 'zstd':
      return zstdCodec;
    case 'bz2':
      return (bz2 ??= loadBz2());
  }
}
