/**
 * `chunkvault serve` (the API, plus supervised worker processes) and `chunkvault worker`.
 * SIGTERM/SIGINT stop both gracefully: no new claims, running jobs finish or are cancelled
 * within the shutdown timeout.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openBackend, defaultRepositoryPath } from '../backends/open.js';
import type { Backend } from '../backends/backend.js';
import type { Catalog } from '../catalog/catalog.js';
import { openCatalog } from '../catalog/open.js';
import { defaultCatalogPath } from '../cli/context.js';
import { InvalidInputError } from '../errors.js';
import { AllowList } from './allow-list.js';
import { ApiServer } from './api.js';
import { loadConfig, type ServiceConfig } from './config.js';
import { createLogger, type Logger } from './log.js';
import { reapAbandonedJobs } from './reaper.js';
import { JobWorker } from './worker.js';
import { within } from './deadline.js';

export interface ServiceCliOptions {
  repo?: string;
  catalog?: string;
  config?: string;
  listen?: string;
  volume?: string[];
  leaseSeconds?: number;
  shutdownTimeout?: number;
  threads?: number;
}

const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

interface Opened {
  config: ServiceConfig;
  backend: Backend;
  catalog: Catalog;
  allow: AllowList;
  repoAddress: string;
  catalogAddress: string;
}

async function open(o: ServiceCliOptions): Promise<Opened> {
  const config = loadConfig(o.config, {
    listen: o.listen, volumes: o.volume, leaseSeconds: o.leaseSeconds, shutdownSeconds: o.shutdownTimeout,
  });
  const allow = new AllowList(config.volumes);
  const repoAddress = o.repo ?? process.env.CHUNKVAULT_REPO ?? config.repo ?? defaultRepositoryPath();
  const named = o.catalog ?? process.env.CHUNKVAULT_CATALOG ?? config.catalog;
  const catalogAddress = named ?? defaultCatalogPath();
  const backend = await openBackend(repoAddress);
  const catalog = await openCatalog(catalogAddress, { createDirectory: named === undefined });
  return { config, backend, catalog, allow, repoAddress, catalogAddress };
}

/** How long closing the catalog may take at shutdown. */
const CLOSE_MS = 5000;

/**
 * Resolves on the first SIGTERM or SIGINT. Later ones are only logged: a terminal's Ctrl-C reaches
 * the workers and `serve` (which forwards SIGTERM) together, and a shutdown must not turn into a kill.
 */
function shutdownSignal(log: Logger): Promise<string> {
  return new Promise((resolve) => {
    let first = true;
    const on = (why: string) => {
      if (!first) return void log.info({ reason: why }, 'already shutting down');
      first = false;
      log.info({ reason: why }, 'shutting down');
      resolve(why);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
    // A worker started by `serve` stops with it, even when `serve` was killed outright.
    if (process.connected) process.once('disconnect', () => on('serve exited'));
  });
}

export async function runWorker(o: ServiceCliOptions): Promise<void> {
  const log = createLogger('chunkvault-worker');
  const { config, backend, catalog, allow } = await open(o);
  const worker = new JobWorker({ catalog, backend, allow, log, leaseMs: config.leaseMs, threads: o.threads });
  worker.start();
  log.info({ worker: worker.name, repository: backend.url, lease_ms: config.leaseMs, volumes: allow.patterns }, 'worker started');
  await shutdownSignal(log);
  const clean = await worker.stop(config.shutdownTimeoutMs);
  await within(catalog.close(), CLOSE_MS, undefined); // a catalog that hangs does not hold the exit
  await backend.close();
  log.info({ worker: worker.name, clean }, 'worker stopped');
  if (process.connected) process.disconnect(); // the channel to `serve` would keep this process alive
  // A job stuck in a system call would keep the process alive: it is abandoned, so exit.
  exitSoon(clean ? 0 : 1);
}

export async function runServe(o: ServiceCliOptions & { workers: number }): Promise<void> {
  const log = createLogger('chunkvault-api');
  const { config, backend, catalog, allow, repoAddress, catalogAddress } = await open(o);
  if (!config.tokens.length) {
    throw new InvalidInputError('no API tokens configured: set tokens in --config or CHUNKVAULT_API_TOKENS=name:admin:<secret>');
  }
  if (!Number.isInteger(o.workers) || o.workers < 0) throw new InvalidInputError(`--workers must be a whole number, got ${o.workers}`);
  const api = new ApiServer({ catalog, backend, allow, tokens: config.tokens, log, version: VERSION });
  const addr = await api.listen(config.port, config.host);
  log.info({ address: `${addr.address}:${addr.port}`, repository: backend.url, workers: o.workers }, 'API listening');

  // Worker processes, restarted if they die while the service runs.
  let stopping = false;
  const children = new Set<ChildProcess>();
  const main = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  // Addresses go through the environment: a catalog password never shows in a process list.
  const env = { ...process.env, CHUNKVAULT_REPO: repoAddress, CHUNKVAULT_CATALOG: catalogAddress };
  const args = ['worker'];
  if (o.config) args.push('--config', o.config);
  for (const v of o.volume ?? []) args.push('--volume', v);
  if (o.leaseSeconds) args.push('--lease-seconds', String(o.leaseSeconds));
  if (o.shutdownTimeout !== undefined) args.push('--shutdown-timeout', String(o.shutdownTimeout));
  if (o.threads) args.push('--threads', String(o.threads));
  const spawnWorker = () => {
    const child = fork(main, args, { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(child);
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (stopping) return;
      log.error({ pid: child.pid, code, signal }, 'worker process died; starting another');
      setTimeout(() => !stopping && spawnWorker(), 1000).unref();
    });
  };
  for (let i = 0; i < o.workers; i++) spawnWorker();
  // The API reaps abandoned jobs too, so records stay truthful even when no worker is left.
  const reaper = setInterval(() => void reapAbandonedJobs(catalog, backend, log).catch((err: Error) =>
    log.error({ err: err.message }, 'reaping abandoned jobs failed')), Math.max(1000, config.leaseMs / 2));

  await shutdownSignal(log);
  stopping = true;
  clearInterval(reaper);
  const exited = [...children].map((c) => new Promise((r) => c.once('exit', r)));
  for (const c of children) c.kill('SIGTERM');
  await Promise.all([api.close(config.shutdownTimeoutMs), ...exited]);
  await within(catalog.close(), CLOSE_MS, undefined);
  await backend.close();
  log.info('service stopped');
  exitSoon(0);
}

/** Exits even while a catalog that stopped answering still holds a connection open. */
function exitSoon(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 1000).unref();
}
