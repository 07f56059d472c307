import { BackendError, InvalidInputError, TransientBackendError } from '../errors.js';
import { ownMemory, type Backend, type CallOptions, ListOptions, type ObjectPieces, type ObjectRange } from './backend.js';
import { classifyFailure, md5, md5Pieces, piecesStream, rangeSize, withDeadline } from './faults.js';

/** Where and how to authenticate; secrets come from the environment only. */
export interface SwiftAuth {
  /**
   * `.../auth/v1.0` or `.../v1` (tempauth, swauth); anything else is Keystone v3 (`/v3` is
   * added when missing, as the OpenStack clients do).
   */
  authUrl: string;
  username: string;
  password: string;
  /** Keystone v3: the project to scope to (by id, or by name within its domain). */
  projectId?: string;
  projectName?: string;
  userDomainName?: string;
  userDomainId?: string;
  projectDomainName?: string;
  projectDomainId?: string;
  /** Keystone v3: which object-store endpoint of the catalog (default: public, any region). */
  region?: string;
  interface?: string;
}

export interface SwiftOptions {
  container: string;
  auth: SwiftAuth;
  pageSize?: number;
  requestTimeoutMs?: number;
}

interface Session {
  storageUrl: string;
  token: string;
}

/** Reads the OpenStack client variables (OS_*) or the swift client's ST_* ones. */
export function swiftAuthFromEnv(authUrl: string | undefined, env: NodeJS.ProcessEnv = process.env): SwiftAuth {
  const url = authUrl ?? env.OS_AUTH_URL ?? env.ST_AUTH;
  const username = env.OS_USERNAME ?? env.ST_USER;
  const password = env.OS_PASSWORD ?? env.ST_KEY;
  if (!url) throw new InvalidInputError('swift: no auth URL (give ?auth=... in the address, or set OS_AUTH_URL)');
  if (!username || !password) throw new InvalidInputError('swift: no credentials (set OS_USERNAME and OS_PASSWORD, or ST_USER and ST_KEY)');
  const auth: SwiftAuth = {
    authUrl: url, username, password,
    projectId: env.OS_PROJECT_ID ?? env.OS_TENANT_ID, projectName: env.OS_PROJECT_NAME ?? env.OS_TENANT_NAME,
    userDomainId: env.OS_USER_DOMAIN_ID, userDomainName: env.OS_USER_DOMAIN_NAME,
    projectDomainId: env.OS_PROJECT_DOMAIN_ID, projectDomainName: env.OS_PROJECT_DOMAIN_NAME,
    region: env.OS_REGION_NAME, interface: env.OS_INTERFACE,
  };
  if (keystoneTokensUrl(url) && !auth.projectId && !auth.projectName) {
    throw new InvalidInputError(`swift: ${url} is a Keystone v3 endpoint: set OS_PROJECT_NAME or OS_PROJECT_ID (Swift needs a project-scoped token)`);
  }
  return auth;
}

/** Keystone's token URL for a v3 auth URL; undefined for v1 (tempauth) auth URLs. */
export function keystoneTokensUrl(authUrl: string): string | undefined {
  const base = authUrl.replace(/\/+$/, '');
  if (/\/v1(\.0)?$/.test(base)) return undefined;
  if (/\/v2\.0$/.test(base)) throw new InvalidInputError(`swift: ${authUrl} is Keystone v2.0, which is gone; use the v3 endpoint`);
  return `${/\/v3$/.test(base) ? base : `${base}/v3`}/auth/tokens`;
}

/** The body of a Keystone v3 password authentication, scoped to the project. */
function keystoneAuthBody(a: SwiftAuth): string {
  const domain = (id: string | undefined, name: string | undefined) => (id ? { id } : { name: name ?? 'Default' });
  const project = a.projectId
    ? { id: a.projectId }
    : { name: a.projectName, domain: domain(a.projectDomainId, a.projectDomainName) };
  return JSON.stringify({
    auth: {
      identity: { methods: ['password'], password: { user: { name: a.username, domain: domain(a.userDomainId, a.userDomainName), password: a.password } } },
      scope: { project },
    },
  });
}

const encodeName = (name: string): string => name.split('/').map(encodeURIComponent).join('/');

/** Drains a response whose body is not needed (so the connection can be reused). */
const discard = async (r: Response): Promise<void> => void (await r.body?.cancel());

/**
 * A repository in OpenStack Swift, laid out as Cinder's Swift driver does. Tokens are
 * reused until the server answers 401, then renewed once. Puts send the MD5 as ETag and
 * check the ETag the server returns, as Cinder does.
 */
export class SwiftBackend implements Backend {
  readonly kind = 'swift' as const;
  readonly nestedContainers = false;
  /** Swift's default max_file_size (a cluster may set another). */
  readonly maxObjectBytes = 5 * 1024 ** 3 + 2;
  readonly url: string;
  readonly defaultContainer: string;
  private session: Promise<Session> | undefined;
  private readonly timeoutMs: number;

  constructor(private readonly opts: SwiftOptions) {
    this.defaultContainer = opts.container;
    this.url = `swift://${opts.container}?auth=${encodeURIComponent(opts.auth.authUrl)}`;
    this.timeoutMs = opts.requestTimeoutMs ?? 120_000;
  }

  private authenticate(callerSignal?: AbortSignal): Promise<Session> {
    return withDeadline(callerSignal, this.timeoutMs, (signal) => this.login(signal, callerSignal));
  }

  private async login(signal: AbortSignal, callerSignal?: AbortSignal): Promise<Session> {
    const a = this.opts.auth;
    const what = `swift auth at ${a.authUrl}`;
    const tokensUrl = keystoneTokensUrl(a.authUrl);
    let res: Response;
    try {
      res = tokensUrl
        ? await fetch(tokensUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: keystoneAuthBody(a), signal })
        : await fetch(a.authUrl, { headers: { 'x-auth-user': a.username, 'x-auth-key': a.password }, signal });
    } catch (err) {
      throw classifyFailure(err, what, {}, undefined, callerSignal);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw classifyFailure(undefined, what, {}, res.status, callerSignal);
    }
    if (tokensUrl) {
      const token = res.headers.get('x-subject-token');
      const body = (await res.json()) as { token?: { catalog?: { type: string; endpoints: { interface: string; region?: string; region_id?: string; url: string }[] }[] } };
      if (!token) throw new BackendError(`${what}: the response has no X-Subject-Token`);
      const iface = (a.interface ?? 'public').replace(/URL$/, ''); // 'publicURL' is the v2 spelling
      const endpoint = body.token?.catalog
        ?.find((s) => s.type === 'object-store')
        ?.endpoints.find((e) => e.interface === iface && (!a.region || (e.region_id ?? e.region) === a.region));
      if (!endpoint) {
        const where = `${iface} object-store endpoint${a.region ? ` in region ${a.region}` : ''}`;
        throw new BackendError(`${what}: the service catalog has no ${where} (set OS_INTERFACE / OS_REGION_NAME)`);
      }
      return { token, storageUrl: endpoint.url.replace(/\/$/, '') };
    }
    await res.body?.cancel();
    const token = res.headers.get('x-auth-token');
    const storageUrl = res.headers.get('x-storage-url');
    if (!token || !storageUrl) throw new BackendError(`${what}: the response has no X-Auth-Token or X-Storage-Url`);
    return { token, storageUrl: storageUrl.replace(/\/$/, '') };
  }

  /**
   * One request with the current token (renewed once on 401); `consume` reads the response
   * within the same deadline, so a stalled body counts as a timeout too.
   */
  private async request<T>(
    method: string,
    path: string,
    ctx: { container: string; object?: string },
    opts: CallOptions | undefined,
    init: { body?: Uint8Array | ObjectPieces; headers?: Record<string, string>; ok?: number[] },
    consume: (res: Response) => Promise<T>,
  ): Promise<T> {
    const what = `swift ${method} ${ctx.container}${ctx.object ? '/' + ctx.object : ''}`;
    for (let attempt = 0; ; attempt++) {
      opts?.signal?.throwIfAborted();
      const session = this.session ?? (this.session = this.authenticate(opts?.signal));
      let s: Session;
      try {
        s = await session;
      } catch (err) {
        if (this.session === session) this.session = undefined;
        throw err;
      }
      const outcome = await withDeadline<{ renew: true } | { value: T }>(opts?.signal, this.timeoutMs, async (signal) => {
        let res: Response;
        try {
          res = await fetch(s.storageUrl + path, {
            method,
            headers: { 'x-auth-token': s.token, ...init.headers },
            // Pieces are read again on every try (a 401 renewal sends the body twice).
            body: (init.body === undefined || init.body instanceof Uint8Array ? init.body : piecesStream(init.body)) as BodyInit | undefined,
            duplex: 'half', // Node's fetch refuses a stream body without it
            signal,
          } as RequestInit);
        } catch (err) {
          throw classifyFailure(err, what, ctx, undefined, opts?.signal);
        }
        if (res.status === 401 && attempt === 0) {
          await res.body?.cancel();
          return { renew: true };
        }
        if (!res.ok && !init.ok?.includes(res.status)) {
          await res.body?.cancel();
          // 422: the object's ETag header did not match what Swift received (damaged on the way).
          const label = res.status === 422 ? `${what}: the data Swift received does not match its MD5` : what;
          throw classifyFailure(undefined, label, ctx, res.status, opts?.signal);
        }
        const value: T = await this.body(res, consume, what, ctx, opts);
        return { value };
      });
      if ('value' in outcome) return outcome.value;
      if (this.session === session) this.session = undefined;
    }
  }

  /** Reads a response body; a connection lost or timed out meanwhile is a transient fault. */
  private async body<T>(res: Response, read: (r: Response) => Promise<T>, what: string, ctx: { container: string; object?: string }, opts?: CallOptions): Promise<T> {
    try {
      return await read(res);
    } catch (err) {
      if (opts?.signal?.aborted) throw opts.signal.reason;
      if (err instanceof SyntaxError) throw new BackendError(`${what}: the listing is not valid JSON`, ctx);
      throw new TransientBackendError(`${what}: ${(err as Error).message}`, { ...ctx, cause: err });
    }
  }

  async ensureContainer(container: string, opts?: CallOptions): Promise<void> {
    await this.request('PUT', `/${encodeName(container)}`, { container }, opts, {}, (r) => discard(r));
  }

  async *list(container: string, prefix: string, opts?: ListOptions): AsyncIterable<string> {
    const limit = this.opts.pageSize ?? 10_000;
    let marker = opts?.after ?? '';
    for (;;) {
      const q = new URLSearchParams({ format: 'json', limit: String(limit), prefix, marker });
      const page = await this.request('GET', `/${encodeName(container)}?${q}`, { container }, opts, { ok: [404] }, (r) =>
        r.status === 404 ? discard(r).then(() => undefined) : (r.json() as Promise<{ name: string }[]>));
      if (!page) return;
      for (const o of page) yield o.name;
      if (page.length < limit) return;
      marker = page[page.length - 1]!.name;
    }
  }

  async put(container: string, name: string, data: Uint8Array, opts?: CallOptions): Promise<void> {
    await this.store(container, name, ownMemory(data), md5(data).toString('hex'), opts);
  }

  async putPieces(container: string, name: string, data: ObjectPieces, opts?: CallOptions): Promise<void> {
    const ctx = { container, object: name };
    await this.store(container, name, data, md5Pieces(data, `swift PUT ${container}/${name}`, ctx).toString('hex'), opts);
  }

  private async store(container: string, name: string, body: Uint8Array | ObjectPieces, etag: string, opts?: CallOptions): Promise<void> {
    const ctx = { container, object: name };
    const stored = await this.request('PUT', `/${encodeName(container)}/${encodeName(name)}`, ctx, opts, {
      body, headers: { etag, 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
    }, (r) => discard(r).then(() => r.headers.get('etag')?.replace(/"/g, '')));
    if (stored !== etag) {
      throw new BackendError(`swift PUT ${container}/${name}: the server answered ETag ${stored ?? '(none)'}, not the MD5 of the data ${etag}`, ctx);
    }
  }

  async get(container: string, name: string, opts?: CallOptions): Promise<Buffer> {
    const ctx = { container, object: name };
    return Buffer.from(await this.request('GET', `/${encodeName(container)}/${encodeName(name)}`, ctx, opts, {}, (r) => r.arrayBuffer()));
  }

  async readRange(container: string, name: string, offset: number, length: number, opts?: CallOptions): Promise<ObjectRange> {
    const ctx = { container, object: name };
    const range = { range: `bytes=${offset}-${offset + length - 1}` };
    // 416: nothing from `offset` on (an empty object has no range at all).
    const r = length === 0 ? undefined : await this.request('GET', `/${encodeName(container)}/${encodeName(name)}`, ctx, opts, { headers: range, ok: [416] },
      async (res) => res.status === 416 ? discard(res).then(() => undefined)
        : { status: res.status, contentRange: res.headers.get('content-range'), body: Buffer.from(await res.arrayBuffer()) });
    if (!r) return { bytes: Buffer.alloc(0), size: await this.size(container, name, opts) };
    if (r.status === 206) return { bytes: r.body, size: rangeSize(r.contentRange, `swift GET ${container}/${name}`, ctx) };
    // 200: the server ignored the Range header and sent the whole object.
    return { bytes: r.body.subarray(offset, offset + length), size: r.body.length };
  }

  private async size(container: string, name: string, opts?: CallOptions): Promise<number> {
    const ctx = { container, object: name };
    const size = await this.request('HEAD', `/${encodeName(container)}/${encodeName(name)}`, ctx, opts, {},
      (r) => discard(r).then(() => r.headers.get('content-length')));
    if (size === null || !/^\d+$/.test(size)) throw new BackendError(`swift HEAD ${container}/${name}: the server answered Content-Length ${size ?? '(none)'}`, ctx);
    return Number(size);
  }

  async exists(container: string, name: string, opts?: CallOptions): Promise<boolean> {
    return this.request('HEAD', `/${encodeName(container)}/${encodeName(name)}`, { container, object: name }, opts, { ok: [404] },
      (r) => discard(r).then(() => r.status !== 404));
  }

  async delete(container: string, name: string, opts?: CallOptions): Promise<void> {
    await this.request('DELETE', `/${encodeName(container)}/${encodeName(name)}`, { container, object: name }, opts, { ok: [404] }, (r) => discard(r));
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {}
}
