/**
 * The real Swift server (with the S3 API) the object-store tests run against: started by
 * scripts/swift-saio.sh (which installs Debian's packages when missing), once per process.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../../src/backends/backend.js';
import { S3Backend } from '../../src/backends/s3.js';
import { SwiftBackend, type SwiftAuth } from '../../src/backends/swift.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export interface SwiftServer {
  url: string;
  authUrl: string;
  s3Address(bucket: string, extra?: string): string;
  swiftAddress(container: string, extra?: string): string;
}

let started: SwiftServer | undefined;

export function swiftServer(): SwiftServer {
  if (started) return started;
  execFileSync('bash', [path.join(ROOT, 'scripts/swift-saio.sh'), 'start'], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
  const env = execFileSync('bash', [path.join(ROOT, 'scripts/swift-saio.sh'), 'env'], { encoding: 'utf8' });
  for (const m of env.matchAll(/(\w+)=(\S+)/g)) process.env[m[1]!] = m[2]!;
  const url = process.env.CHUNKVAULT_TEST_SWIFT_URL!;
  started = {
    url,
    authUrl: `${url}/auth/v1.0`,
    s3Address: (bucket, extra = '') => `s3://${bucket}?endpoint=${encodeURIComponent(url)}&region=us-east-1${extra}`,
    swiftAddress: (container, extra = '') => `swift://${container}?auth=${encodeURIComponent(`${url}/auth/v1.0`)}${extra}`,
  };
  return started;
}

/** A container/bucket name no other run uses. */
export function uniqueName(label: string): string {
  return `cvt-${label}-${randomBytes(4).toString('hex')}`;
}

export function s3Backend(bucket: string, opts: { pageSize?: number; endpoint?: string; requestTimeoutMs?: number } = {}): Backend {
  const server = swiftServer();
  return new S3Backend({ bucket, endpoint: opts.endpoint ?? server.url, region: 'us-east-1', pathStyle: true, pageSize: opts.pageSize, requestTimeoutMs: opts.requestTimeoutMs });
}

export function swiftBackend(container: string, opts: { pageSize?: number; authUrl?: string; requestTimeoutMs?: number; password?: string } = {}): Backend {
  const server = swiftServer();
  return new SwiftBackend({
    container,
    auth: { authUrl: opts.authUrl ?? server.authUrl, username: 'test:tester', password: opts.password ?? 'testing' },
    pageSize: opts.pageSize,
    requestTimeoutMs: opts.requestTimeoutMs,
  });
}

export interface KeystoneServer {
  /** Keystone's v3 endpoint. */
  authUrl: string;
  /** The Swift proxy that takes Keystone tokens (listed in the catalog as RegionOne's object-store). */
  swiftUrl: string;
  /** Where RegionTwo's object-store endpoint points: a port nothing listens on. */
  deadUrl: string;
  user: { username: string; password: string; projectName: string };
  admin: { username: string; password: string; projectName: string };
  outsider: { username: string; password: string };
}

let keystone: KeystoneServer | undefined;

/** Keystone v3 and a Keystone-auth Swift proxy, started by scripts/keystone.sh (installs them when missing). */
export function keystoneServer(): KeystoneServer {
  if (keystone) return keystone;
  swiftServer();
  execFileSync('bash', [path.join(ROOT, 'scripts/keystone.sh'), 'start'], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 900_000 });
  const env = execFileSync('bash', [path.join(ROOT, 'scripts/keystone.sh'), 'env'], { encoding: 'utf8' });
  const vars = Object.fromEntries([...env.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
  keystone = {
    authUrl: vars.CHUNKVAULT_TEST_KEYSTONE_URL!,
    swiftUrl: vars.CHUNKVAULT_TEST_SWIFT_KEYSTONE_URL!,
    deadUrl: vars.CHUNKVAULT_TEST_DEAD_URL!,
    user: { username: 'chunkvault', password: 'backup-secret', projectName: 'backups' },
    admin: { username: 'admin', password: 'admin-secret', projectName: 'admin' },
    outsider: { username: 'outsider', password: 'outsider-secret' },
  };
  return keystone;
}

export function keystoneSwiftBackend(container: string, opts: { pageSize?: number; auth?: Partial<SwiftAuth> } = {}): SwiftBackend {
  const ks = keystoneServer();
  return new SwiftBackend({ container, auth: { authUrl: ks.authUrl, ...ks.user, ...opts.auth }, pageSize: opts.pageSize });
}
