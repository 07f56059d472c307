import { BackendError, InvalidInputError, TransientBackendError } from '../errors.js';
import type { Backend, CallOptions } from './backend.js';
import { classifyFailure, md5, withDeadline } from './faults.js';

/** Where and how to authenticate; secrets come from the environment only. */
export interface SwiftAuth {
  /** `.../auth/v1.0` (tempauth, swauth) or a Keystone v3 endpoint (`.../v3`). */
  authUrl: string;
  username: string;
  password: string;
  /** Keystone v3 scope. */
  projectName?: string;
  userDomainName?: string;
  projectDomainName?: string;
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
  return {
    authUrl: url, username, password, projectName: env.OS_PROJECT_NAME ?? env.OS_TENANT_NAME,
    userDomainName: env.OS_USER_DOMAIN_NAME ?? 'Default', projectDomainName: env.OS_PROJECT_DOMAIN_NAME ?? 'Default',
    region: env.OS_REGION_NAME, interface: env.OS_INTERFACE ?? 'public',
  };
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
    let res: Response;
    try {
      if (/\/v3\/?$/.test(a.authUrl)) {
        res = await fetch(a.authUrl.replace(/\/?$/, '/auth/tokens'), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            auth: {
              identity: { methods: ['password'], password: { user: { name: a.username, domain: { name: a.userDomainName }, password: a.password } } },
              ...(a.projectName ? { scope: { project: { name: a.projectName, domain: { name: a.projectDomainName } } } } : {}),
            },
          }),
          signal,
        });
      } else {
        res = await fetch(a.authUrl, {
          headers: { 'x-auth-user': a.username, 'x-auth-key': a.password },
          signal,
        });
      }
    } catch (err) {
      throw classifyFailure(err, what, {}, undefined, callerSignal);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw classifyFailure(undefined, what, {}, res.status, callerSignal);
    }
    if (/\/v3\/?$/.test(a.authUrl)) {
      const token = res.headers.get('x-subject-token');
      const body = (await res.json()) as { token?: { catalog?: { type: string; endpoints: { interface: string; region?: string; url: string }[] }[] } };
      const endpoint = body.token?.catalog
        ?.find((s) => s.type === 'object-store')
        ?.endpoints.find((e) => e.interface === a.interface && (!a.region || e.region === a.region));
      if (!token || !endpoint) throw new BackendError(`${what}: no token or no object-store endpoint in the service catalog`);
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
    init: { body?: Uint8Array; headers?: Record<string, string>; ok?: number[] },
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
            body: init.body as BodyInit | undefined,
            signal,
          });
        } catch (err) {
          throw classifyFailure(err, what, ctx, undefined, opts?.signal);
        }
        if (res.status === 401 && attempt === 0) {
          await res.body?.cancel();
          return { renew: true };
        }
        if (!res.ok && !init.ok?.includes(res.status)) {
          await res.body?.cancel();
          throw classifyFailure(undefined, what, ctx, res.status, opts?.signal);
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

  async *list(container: string, prefix: string, opts?: CallOptions): AsyncIterable<string> {
    const limit = this.opts.pageSize ?? 10_000;
    let marker = '';
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
    const etag = md5(data).toString('hex');
    const ctx = { container, object: name };
    const stored = await this.request('PUT', `/${encodeName(container)}/${encodeName(name)}`, ctx, opts, {
      body: data, headers: { etag, 'content-type': 'application/octet-stream' },
    }, (r) => discard(r).then(() => r.headers.get('etag')?.replace(/"/g, '')));
    if (stored !== etag) {
      throw new BackendError(`swift PUT ${container}/${name}: the server stored ETag ${stored}, expected ${etag}`, ctx);
    }
  }

  async get(container: string, name: string, opts?: CallOptions): Promise<Buffer> {
    const ctx = { container, object: name };
    return Buffer.from(await this.request('GET', `/${encodeName(container)}/${encodeName(name)}`, ctx, opts, {}, (r) => r.arrayBuffer()));
  }

  async delete(container: string, name: string, opts?: CallOptions): Promise<void> {
    await this.request('DELETE', `/${encodeName(container)}/${encodeName(name)}`, { container, object: name }, opts, { ok: [404] }, (r) => discard(r));
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {}
}
