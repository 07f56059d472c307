import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidInputError } from '../errors.js';
import type { Backend } from './backend.js';
import { PosixBackend } from './posix.js';
import { RetryBackend } from './retry.js';

/** The embedded default repository: a directory under the user's data home. */
export function defaultRepositoryPath(env: NodeJS.ProcessEnv = process.env): string {
  const dataHome = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(dataHome, 'chunkvault', 'repository');
}

function flag(v: string | null, what: string): boolean | undefined {
  if (v === null) return undefined;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new InvalidInputError(`${what} must be true or false, got '${v}'`);
}

function int(v: string | null, what: string): number | undefined {
  if (v === null) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidInputError(`${what} must be a positive integer, got '${v}'`);
  return n;
}

/** An endpoint or auth URL: http(s), and no credentials in it (they would end up in records and messages). */
function serviceUrl(v: string, what: string): URL {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new InvalidInputError(`${what} '${v}' is not a URL (expected http://host:port or https://...)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidInputError(`${what} '${v}' must be an http:// or https:// URL`);
  if (u.username || u.password) throw new InvalidInputError(`${what}: credentials do not belong in the repository address; use the environment`);
  return u;
}

/**
 * Opens a repository from its address: `file:/path`, `file:///path` or a bare path for a
 * directory; `s3://bucket?endpoint=&region=&path_style=&profile=` (credentials from the AWS
 * SDK's chain); `swift://container?auth=<auth URL>` (credentials from OS_* or ST_*). Object
 * stores are wrapped in RetryBackend.
 */
export async function openBackend(address: string): Promise<Backend> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(address)?.[1]?.toLowerCase();
  if (scheme === undefined || address.startsWith('/') || address.startsWith('.')) return new PosixBackend(address);
  if (scheme === 'file') {
    return new PosixBackend(address.startsWith('file://') ? fileURLToPath(address) : address.slice('file:'.length));
  }
  if (scheme !== 's3' && scheme !== 'swift') {
    throw new InvalidInputError(`unsupported repository address '${address}' (expected a path, file:, s3:// or swift://)`);
  }
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new InvalidInputError(`malformed repository address '${address}'`);
  }
  if (url.username || url.password) throw new InvalidInputError('credentials do not belong in the repository address; use the environment');
  const container = decodeURIComponent(url.hostname + url.pathname).replace(/\/+$/, '') || 'volumebackups';
  const q = url.searchParams;
  const known = scheme === 's3' ? ['endpoint', 'region', 'path_style', 'profile', 'page_size'] : ['auth', 'page_size'];
  for (const key of q.keys()) {
    if (!known.includes(key)) throw new InvalidInputError(`unknown ${scheme} address parameter '${key}' (known: ${known.join(', ')})`);
  }
  if (scheme === 's3' && !/^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$/.test(container)) {
    throw new InvalidInputError(`'${container}' is not a valid S3 bucket name (3-63 lowercase letters, digits, dots and dashes on AWS)`);
  }
  const pageSize = int(q.get('page_size'), 'page_size');
  if (scheme === 'swift' && pageSize !== undefined && pageSize > 10_000) {
    throw new InvalidInputError(`page_size must be at most 10000 for Swift (its listing limit), got ${pageSize}`);
  }
  for (const key of ['endpoint', 'auth']) {
    const v = q.get(key);
    if (v !== null) serviceUrl(v, key);
  }
  if (q.get('region') === '') throw new InvalidInputError('region must not be empty (leave it out for us-east-1 or AWS_REGION)');
  // Loaded on demand: most runs never touch an object store (the AWS SDK is large).
  const inner =
    scheme === 's3'
      ? new (await import('./s3.js')).S3Backend({
          bucket: container, endpoint: q.get('endpoint') ?? undefined, region: q.get('region') ?? undefined,
          pathStyle: flag(q.get('path_style'), 'path_style'), profile: q.get('profile') ?? undefined, pageSize,
        })
      : await import('./swift.js').then(({ SwiftBackend, swiftAuthFromEnv }) =>
          new SwiftBackend({ container, auth: swiftAuthFromEnv(q.get('auth') ?? undefined), pageSize }));
  return new RetryBackend(inner);
}
