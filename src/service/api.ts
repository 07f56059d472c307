/**
 * The HTTP API: JSON in, JSON out, every body and query validated, every error a JSON
 * object with a status code that says what went wrong. It only queues work; workers do it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { Backend } from '../backends/backend.js';
import type { Catalog } from '../catalog/catalog.js';
import { exportRecord, importRecord } from '../engine/records.js';
import {
  BackendError, CatalogError, ChunkvaultError, ConflictError, IntegrityError, InvalidInputError, NotFoundError, TransientBackendError,
} from '../errors.js';
import type { AllowList } from './allow-list.js';
import { Authenticator } from './auth.js';
import type { Token } from './config.js';
import type { Logger } from './log.js';
import { CATALOG_CHECK_MS, within } from './deadline.js';
import { Metrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import { Requests } from './requests.js';
import { CreateBackupBody, ImportBody, ListBackupsQuery, ListJobsQuery, RestoreBody } from './schemas.js';
import { backupView, jobView } from './views.js';

const MAX_BODY = 2 * 1024 * 1024;

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

const TITLES: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  409: 'Conflict', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 500: 'Internal Server Error',
  502: 'Bad Gateway', 503: 'Service Unavailable',
};

function statusOf(err: unknown): number {
  if (err instanceof HttpError) return err.status;
  if (err instanceof InvalidInputError) return 400;
  if (err instanceof NotFoundError) return 404;
  if (err instanceof ConflictError) return 409;
  if (err instanceof TransientBackendError || err instanceof CatalogError) return 503;
  if (err instanceof BackendError || err instanceof IntegrityError) return 502;
  return 500;
}

function parse<T extends z.ZodType>(schema: T, value: unknown, where: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.length ? issue.path.join('.') : undefined;
  const message = issue.code === 'unrecognized_keys'
    ? `unknown field(s) ${issue.keys.map((k) => `'${k}'`).join(', ')}`
    : `${field ? `'${field}': ` : ''}${issue.message}`;
  throw new HttpError(400, `${where}: ${message}`);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  // The body is JSON whatever the content type says (`curl -d` labels it a form).
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, `request body exceeds ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text.trim()) throw new HttpError(400, 'request body: a JSON object is required');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `request body is not valid JSON: ${(err as Error).message}`);
  }
  refuseBadText(value, 'request body');
  return value;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * No text the API takes may hold a NUL character (no path, name or id has one) or half of a
 * UTF-16 surrogate pair (it would be stored as U+FFFD, not as sent).
 */
function refuseBadText(value: unknown, where: string, depth = 0): void {
  if (depth > MAX_NESTING) throw new HttpError(400, `${where}: nested deeper than ${MAX_NESTING} levels`);
  if (typeof value === 'string') {
    if (value.includes('\0')) throw new HttpError(400, `${where}: text must not contain NUL characters`);
    if (LONE_SURROGATE.test(value)) throw new HttpError(400, `${where}: text must be well-formed Unicode (a lone surrogate)`);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => refuseBadText(v, `${where}[${i}]`, depth + 1));
  } else if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      refuseBadText(k, where, depth + 1);
      refuseBadText(v, `${where} '${k}'`, depth + 1);
    }
  }
}

/** No request of the API nests anywhere near this deep. */
const MAX_NESTING = 32;

function decodeParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, `path: '${raw}' is not valid percent-encoding`);
  }
}

type Handler = (ctx: { req: IncomingMessage; params: string[]; query: Record<string, string> }) => Promise<[number, unknown]>;
interface Route { method: string; pattern: RegExp; name: string; handler: Handler; mutates: boolean; open?: boolean }

export interface ApiOptions {
  catalog: Catalog;
  backend: Backend;
  allow: AllowList;
  tokens: Token[];
  log: Logger;
  version: string;
}

export class ApiServer {
  readonly server: Server;
  readonly metrics: Metrics;
  private readonly routes: Route[] = [];
  private readonly auth: Authenticator;

  constructor(private readonly o: ApiOptions) {
    this.auth = new Authenticator(o.tokens);
    this.metrics = new Metrics(o.catalog);
    this.defineRoutes(new Requests(o.catalog, o.backend, o.allow));
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      const fail = (err: NodeJS.ErrnoException) =>
        reject(new InvalidInputError(`cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`));
      this.server.once('error', fail);
      this.server.listen(port, host, () => (this.server.off('error', fail), resolve()));
    });
    return this.server.address() as AddressInfo;
  }

  /** Stops listening; requests in progress get `graceMs` to finish, then their connections are closed. */
  async close(graceMs = 30_000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections(); // idle keep-alive sockets go now
    if ((await within(closed.then(() => true), graceMs, false)) === false) {
      this.server.closeAllConnections();
      await closed;
    }
  }

  private route(method: string, path: string, handler: Handler, flags: { mutates?: boolean; open?: boolean } = {}) {
    const pattern = new RegExp('^' + path.replace(/:\w+/g, '([^/]+)') + '$');
    this.routes.push({ method, pattern, name: path, handler, mutates: flags.mutates ?? method !== 'GET', open: flags.open });
  }

  private defineRoutes(rq: Requests): void {
    const { catalog, backend } = this.o;
    const latestJob = async (id: string) => (await catalog.jobs.latestFor([id])).get(id);
    const view = async (id: string) => {
      const rec = await rq.record(id);
      return backupView(rec, await latestJob(id));
    };
    const list: Handler = async ({ query }) => {
      const q = parse(ListBackupsQuery, query, 'query');
      const limit = q.limit ?? 100;
      const rows = await catalog.list({
        status: q.status, volumeId: q.volume_id, name: q.name, marker: q.marker, limit: limit + 1, repository: backend.url,
      });
      const page = rows.slice(0, limit);
      const jobs = await catalog.jobs.latestFor(page.map((r) => r.id));
      const backups = page.map((r) => backupView(r, jobs.get(r.id)));
      const links = rows.length > limit ? [{ rel: 'next', href: `/v1/backups?${new URLSearchParams({ ...query, marker: page.at(-1)!.id })}` }] : [];
      return [200, { backups, backups_links: links }];
    };
    this.route('GET', '/healthz', async () => {
      const failure = await within(catalog.jobs.list({ limit: 1 }).then(() => undefined, (err: Error) => err.message),
        CATALOG_CHECK_MS, `no answer within ${CATALOG_CHECK_MS / 1000} s`);
      if (failure !== undefined) throw new HttpError(503, `catalog unreachable: ${failure}`);
      return [200, { status: 'ok' }];
    }, { open: true });
    this.route('GET', '/v1/openapi.json', async () => [200, openApiDocument(this.o.version)], { open: true });
    this.route('GET', '/v1/backups', list);
    this.route('GET', '/v1/backups/detail', list);
    this.route('POST', '/v1/backups', async ({ req }) => {
      const body = parse(CreateBackupBody, await readJson(req), 'request body');
      const { backup, job } = await rq.createBackup(body);
      return [202, { backup: backupView(backup, job) }];
    });
    this.route('POST', '/v1/backups/import_record', async ({ req }) => {
      const body = parse(ImportBody, await readJson(req), 'request body');
      const rec = await importRecord(backend, catalog, body.backup_url);
      return [201, { backup: backupView(rec) }];
    });
    this.route('GET', '/v1/backups/:id', async ({ params }) => [200, { backup: await view(params[0]!) }]);
    this.route('DELETE', '/v1/backups/:id', async ({ params }) => {
      const { backup, job } = await rq.delete(params[0]!);
      return [202, { backup: backupView(backup, job ?? undefined) }];
    });
    this.route('POST', '/v1/backups/:id/restore', async ({ req, params }) => {
      const body = parse(RestoreBody, await readJson(req), 'request body');
      const job = await rq.restore(params[0]!, body);
      return [202, { restore: { backup_id: job.backup_id, job_id: job.id, target: body.target } }];
    });
    this.route('GET', '/v1/backups/:id/export_record', async ({ params }) => [200, { 'backup-record': await exportRecord(catalog, params[0]!) }]);
    this.route('GET', '/v1/jobs', async ({ query }) => {
      const q = parse(ListJobsQuery, query, 'query');
      const jobs = await catalog.jobs.list({ status: q.status, kind: q.kind, backupId: q.backup_id, limit: q.limit ?? 100 });
      return [200, { jobs: jobs.map(jobView) }];
    });
    this.route('GET', '/v1/jobs/:id', async ({ params }) => [200, { job: jobView(await rq.job(params[0]!)) }]);
    this.route('POST', '/v1/jobs/:id/cancel', async ({ params }) => [202, { job: jobView(await rq.cancelJob(params[0]!)) }]);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    let routeName = 'unmatched';
    let status = 500;
    let body: unknown;
    let caller: string | undefined;
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname === '/metrics' && req.method === 'GET') {
        routeName = '/metrics';
        const text = await this.metrics.registry.metrics();
        status = 200;
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(text);
        return;
      }
      const matching = this.routes.filter((r) => r.pattern.test(url.pathname));
      // Only the open endpoints answer without a token: not even which paths exist.
      const open = matching.some((r) => r.open);
      const who = open ? undefined : this.auth.identify(req.headers.authorization);
      if (!open && !who) throw new HttpError(401, 'a valid bearer token is required', { 'www-authenticate': 'Bearer' });
      caller = who?.name;
      if (!matching.length) throw new HttpError(404, `no such resource: ${url.pathname}`);
      const route = matching.find((r) => r.method === req.method);
      if (!route) {
        throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`, { allow: matching.map((r) => r.method).join(', ') });
      }
      routeName = route.name;
      if (who && route.mutates && who.role !== 'admin') throw new HttpError(403, `token '${who.name}' may only read`);
      // URLSearchParams decodes leniently ('%zz' stays as it is): each part must be valid percent-encoded UTF-8.
      for (const part of url.search.slice(1).split('&')) {
        try {
          decodeURIComponent(part.replace(/\+/g, ' '));
        } catch {
          throw new HttpError(400, `query: '${part}' is not valid percent-encoding`);
        }
      }
      const query: Record<string, string> = {};
      for (const [k, v] of url.searchParams) {
        if (k in query) throw new HttpError(400, `query: parameter '${k}' given more than once`);
        refuseBadText(v, `query parameter '${k}'`);
        query[k] = v;
      }
      const params = route.pattern.exec(url.pathname)!.slice(1).map(decodeParam);
      for (const p of params) refuseBadText(p, 'path');
      [status, body] = await route.handler({ req, params, query });
    } catch (err) {
      status = statusOf(err);
      const message = status === 500 ? 'internal error (logged)' : (err as Error).message;
      if (status === 500 || !(err instanceof ChunkvaultError || err instanceof HttpError)) {
        this.o.log.error({ method: req.method, route: routeName, err: (err as Error).stack }, 'request failed');
      }
      body = { error: { code: status, title: TITLES[status] ?? 'Error', message } };
      if (err instanceof HttpError) for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
      // Drain what the client still sends so the connection stays usable.
      req.resume();
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.metrics.httpDuration.observe({ method: req.method ?? '', route: routeName, code: String(status) }, seconds);
      this.o.log.info({ method: req.method, route: routeName, status, ms: Math.round(seconds * 1e4) / 10, caller }, 'request');
    }
    if (!res.headersSent) {
      const text = JSON.stringify(body, null, 2) + '\n';
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) }).end(text);
    }
  }
}
