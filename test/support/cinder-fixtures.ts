/** Backups written by real Cinder (test/fixtures/cinder, see its manifest.json). */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

export const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/cinder');

export interface FixtureBackup {
  driver: 'posix' | 's3' | 'swift';
  repository: string;
  id: string;
  parent_id: string | null;
  volume_id: string;
  container: string;
  service_metadata: string;
  object_count: number;
  display_name: string;
  description: string | null;
  created_at: string;
  compression: string;
  chunk_size: number;
  sha_block_size: number;
  source_image: string;
  restored_sha256: string;
  volume_meta_null: boolean;
}

export interface Manifest {
  backups: FixtureBackup[];
  images: Record<string, { sha256: string; bytes: number }>;
}

export const manifest: Manifest = JSON.parse(readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));

export function imageBytes(image: string): Buffer {
  return gunzipSync(readFileSync(path.join(FIXTURES, image)));
}

/** A scratch directory removed by the returned cleanup. */
export function scratch(label: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), `chunkvault-${label}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Copies a fixture repository tree (repo-posix, repo-s3, repo-swift) to `dest`. */
export function copyRepository(name: string, dest: string): string {
  cpSync(path.join(FIXTURES, name), dest, { recursive: true });
  return dest;
}

export function writeImage(image: string, file: string): string {
  writeFileSync(file, imageBytes(image));
  return file;
}
