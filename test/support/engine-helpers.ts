/** Small deterministic volumes and a throwaway repository + catalog for engine tests. */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { PosixBackend } from '../../src/backends/posix.js';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { runBackup, type BackupOptions } from '../../src/engine/backup.js';
import { openSource } from '../../src/engine/source.js';
import { scratch } from './cinder-fixtures.js';

/** A seeded PRNG (xorshift32): the same volume bytes on every run. */
export function pseudoRandom(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Random, text-like and zero regions, so that every compression path runs. */
export function mixedVolume(length: number, seed = 7): Buffer {
  const v = Buffer.alloc(length);
  for (let off = 0, i = 0; off < length; off += 96 * 1024, i++) {
    const n = Math.min(96 * 1024, length - off);
    if (i % 3 === 0) pseudoRandom(n, seed + i).copy(v, off);
    else if (i % 3 === 1) Buffer.from('chunkvault test text line\n'.repeat(Math.ceil(n / 26))).copy(v, off, 0, n);
  }
  return v;
}

export const sha256 = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');

export const SMALL = { chunkSize: 64 * 1024, shaBlockSize: 4096, threads: 1 } as const;

export interface Repo {
  dir: string;
  backend: PosixBackend;
  catalog: SqliteCatalog;
  file(name: string, data?: Uint8Array): string;
  backup(file: string, opts?: Partial<BackupOptions>): ReturnType<typeof runBackup>;
  close(): Promise<void>;
}

export function makeRepo(label: string): Repo {
  const tmp = scratch(label);
  const backend = new PosixBackend(path.join(tmp.dir, 'repo'));
  const catalog = new SqliteCatalog(path.join(tmp.dir, 'catalog.db'));
  return {
    dir: tmp.dir,
    backend,
    catalog,
    file(name, data) {
      const p = path.join(tmp.dir, name);
      if (data) writeFileSync(p, data);
      return p;
    },
    async backup(file, opts = {}) {
      const source = await openSource(file);
      try {
        return await runBackup({ backend, catalog, source, volumeId: 'vol-test', ...SMALL, ...opts });
      } finally {
        await source.close();
      }
    },
    async close() {
      await catalog.close();
      tmp.cleanup();
    },
  };
}

export const read = (p: string) => readFileSync(p);

/** Threads of this process now (Linux): worker threads that were not closed stay counted. */
export const threadCount = (): number => readdirSync('/proc/self/task').length;
