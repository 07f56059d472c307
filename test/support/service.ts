/** Runs `chunkvault serve` (and extra `chunkvault worker` processes) as real processes for tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

/** Every process started here dies with the test process, however it ends. */
const spawned = new Set<ChildProcess>();
const killSpawned = () => {
  for (const c of spawned) c.kill('SIGKILL');
};
process.once('exit', killSpawned);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killSpawned();
    process.exit(1);
  });
}

export interface ServiceOptions {
  repo: string;
  catalog: string;
  volumes: string[];
  workers: number;
  leaseSeconds?: number;
  shutdownSeconds?: number;
}

export interface Response {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface RunningService {
  url: string;
  admin: string;
  reader: string;
  proc: ChildProcess;
  /** Everything the service and its workers logged (JSON lines). */
  logs(): string;
  request(method: string, route: string, body?: unknown, token?: string | null): Promise<Response>;
  /** Polls `route` until `done(body)` holds; fails after `ms`. */
  until(route: string, done: (body: any) => boolean, ms?: number): Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  startWorker(): ChildProcess;
  stop(): Promise<void>;
}

/** Where `serve` logged it listens (a complete log line), once it has. */
function listeningUrl(log: string): string | undefined {
  const m = /"address":"([^"]+)"[^\n]*"msg":"API listening"[^\n]*\n/.exec(log);
  return m ? `http://${m[1]}` : undefined;
}

export async function startService(o: ServiceOptions): Promise<RunningService> {
  const admin = randomBytes(16).toString('hex');
  const reader = randomBytes(16).toString('hex');
  const env = {
    ...process.env,
    CHUNKVAULT_REPO: o.repo,
    CHUNKVAULT_CATALOG: o.catalog,
    CHUNKVAULT_API_TOKENS: `ops:admin:${admin},viewer:reader:${reader}`,
    CHUNKVAULT_VOLUMES: o.volumes.join(','),
  };
  const common = ['--lease-seconds', String(o.leaseSeconds ?? 3), '--threads', '1'];
  if (o.shutdownSeconds !== undefined) common.push('--shutdown-timeout', String(o.shutdownSeconds));
  let log = '';
  const children: ChildProcess[] = [];
  const launch = (args: string[]) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d) => (log += d));
    child.stderr!.on('data', (d) => (log += d));
    children.push(child);
    spawned.add(child);
    child.once('exit', () => spawned.delete(child));
    return child;
  };
  // Port 0: the service takes a free port itself and logs it (a port found free beforehand may be
  // another process's by the time the service binds it).
  const proc = launch(['serve', '--listen', '127.0.0.1:0', '--workers', String(o.workers), ...common]);
  let url = '';
  const request = async (method: string, route: string, body?: unknown, token: string | null = admin): Promise<Response> => {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(url + route, { method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // metrics are text
    }
    return { status: res.status, body: parsed };
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`service exited (${proc.exitCode}):\n${log}`);
    url ||= listeningUrl(log) ?? '';
    const ok = url !== '' && await request('GET', '/healthz').then((r) => r.status === 200, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`service did not become healthy:\n${log}`);
    await sleep(100);
  }
  return {
    url, admin, reader, proc, request,
    logs: () => log,
    async until(route, done, ms = 120_000) {
      const end = Date.now() + ms;
      let last: unknown;
      while (Date.now() < end) {
        const r = await request('GET', route);
        last = r.body;
        if (r.status === 200 && done(r.body)) return r.body;
        await sleep(100);
      }
      throw new Error(`timed out waiting on ${route}; last: ${JSON.stringify(last, null, 1).slice(0, 2000)}`);
    },
    startWorker: () => launch(['worker', ...common]),
    async stop() {
      const exits = children.filter((c) => c.exitCode === null && c.signalCode === null).map((c) => new Promise((r) => c.once('exit', r)));
      for (const c of children) c.kill('SIGTERM');
      await Promise.race([Promise.all(exits), sleep(60_000)]);
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    },
  };
}

/**
 * A TCP proxy whose answers can be slowed down at will (a slow object store, a frozen server),
 * or cut off (`down`: connections are dropped and refused, as when a server is stopped).
 */
export async function startThrottleProxy(target: { host: string; port: number }): Promise<{ url: string; delayMs: number; down: boolean; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let down = false;
  const state = {
    url: '', delayMs: 0, close: async () => {},
    get down() {
      return down;
    },
    set down(v: boolean) {
      down = v;
      if (v) for (const s of sockets) s.destroy();
    },
  };
  const server = net.createServer((client) => {
    if (down) return void client.destroy();
    const upstream = net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (!state.delayMs) return void client.write(chunk);
      upstream.pause();
      const t = setTimeout(() => (timers.delete(t), client.write(chunk), upstream.resume()), state.delayMs);
      timers.add(t);
    });
    upstream.on('end', () => setTimeout(() => client.end(), state.delayMs + 1));
    const end = () => (client.destroy(), upstream.destroy());
    client.on('error', end).on('close', () => (end(), sockets.delete(client)));
    upstream.on('error', end).on('close', () => sockets.delete(upstream));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  state.close = async () => {
    for (const t of timers) clearTimeout(t);
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  };
  return state;
}
