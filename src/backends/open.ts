import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidInputError } from '../errors.js';
import type { Backend } from './backend.js';
import { PosixBackend } from './posix.js';

/** The embedded default repository: a directory under the user's data home. */
export function defaultRepositoryPath(env: NodeJS.ProcessEnv = process.env): string {
  const dataHome = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(dataHome, 'chunkvault', 'repository');
}

/**
 * Opens a repository from its URL-like address: `file:/path`, `file:///path` or a bare
 * path for a directory; `s3://bucket?...` and `swift://container?...` for object stores.
 */
export async function openBackend(address: string): Promise<Backend> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(address)?.[1]?.toLowerCase();
  if (scheme === undefined || address.startsWith('/') || address.startsWith('.')) return new PosixBackend(address);
  if (scheme === 'file') {
    return new PosixBackend(address.startsWith('file://') ? fileURLToPath(address) : address.slice('file:'.length));
  }
  throw new InvalidInputError(`unsupported repository address '${address}' (expected a path, file:, s3:// or swift://)`);
}
