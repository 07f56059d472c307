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
  decompress: (data) => zlib.inflateSync(data),
};

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
  decompress: (data) => zstd.decompress(data),
  compressInto(data, into) {
    try {
      return zstdCCtx().compress2(into, data);
    } catch (err) {
      if (/too small/i.test((err as Error).message)) return null;
      throw err;
    }
  },
  decompressInto: (data, into) => (dctx ??= new zstdBinding.DCtx()).decompress(into, data),
};

interface Bz2Compressor {
  compressBZ2(data: Uint8Array, blockSize: number, workFactor: number): { error: number; output: Uint8Array };
}
interface Bz2Decompressor {
  decompress(src: Uint8Array, destSize: number): Uint8Array;
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
  return {
    algorithm: 'bz2',
    compress(data) {
      const r = compressor.compressBZ2(data, 9, 0);
      if (r.error !== 0) throw new Error(`bzip2 compression failed (code ${r.error})`);
      return Buffer.from(r.output);
    },
    decompress: (data, length) => decompressor.decompress(data, length),
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
