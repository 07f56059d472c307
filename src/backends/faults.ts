/**
 * Turning transport failures into chunkvault's error kinds, the same way for every HTTP store;
 * and the digests, bodies and ranges they all handle alike.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { Readable } from 'node:stream';
import { BackendError, ChunkvaultError, NotFoundError, TransientBackendError, type ErrorContext } from '../errors.js';
import { ownMemory, type ObjectPieces } from './backend.js';

/** HTTP statuses worth retrying: throttling and server-side faults. */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

const TRANSIENT_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENOTFOUND', 'EHOSTUNREACH',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

/** Whether a thrown transport error (socket, timeout) is worth retrying. */
export function isTransientTransportError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = (e as Error).cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code && TRANSIENT_CODES.has(code)) return true;
    if (e.name === 'TimeoutError' || /socket hang up|fetch failed|other side closed|terminated/i.test(e.message)) return true;
  }
  return false;
}

/** A transport error's message with its causes ("fetch failed: connect ECONNREFUSED 127.0.0.1:9"). */
function transportDetail(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; depth < 4 && e !== undefined; e = (e as Error).cause, depth++) {
    const m = e instanceof Error ? e.message : String(e);
    if (m && !parts.some((p) => p.includes(m))) parts.push(m);
    if (!(e instanceof Error)) break;
  }
  return parts.join(': ') || String(err);
}

/**
 * Maps a failed request to an error kind. `signal` is the caller's: its abort is passed
 * through untouched, while our own per-request timeout counts as a transient fault.
 */
export function classifyFailure(
  err: unknown,
  what: string,
  ctx: ErrorContext,
  status: number | undefined,
  signal?: AbortSignal,
): Error {
  if (signal?.aborted) return signal.reason instanceof Error ? signal.reason : (err as Error);
  if (err instanceof ChunkvaultError) return err;
  const detail =
    status === 401 || status === 403
      ? `access denied (HTTP ${status}): check the credentials`
      : status !== undefined
        ? `HTTP ${status}`
        : transportDetail(err);
  const message = `${what}: ${detail}`;
  if (status === 404) return new NotFoundError(message, ctx);
  if ((status !== undefined && isTransientStatus(status)) || (status === undefined && isTransientTransportError(err))) {
    return new TransientBackendError(message, { ...ctx, cause: err });
  }
  return new BackendError(message, { ...ctx, cause: err });
}

/**
 * Runs `fn` under a deadline combined with the caller's signal: the signal `fn` gets aborts
 * when the caller aborts or when `ms` pass, whichever comes first. (A plain timer, held for
 * the whole call: signals combined from AbortSignal.timeout can be collected early on Node 20
 * and then never fire.)
 */
export async function withDeadline<T>(signal: AbortSignal | undefined, ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  // Every request in flight listens to the caller's signal: dozens at once are expected.
  if (signal) setMaxListeners(0, signal);
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')), ms);
  const onAbort = () => ac.abort(signal!.reason);
  if (signal?.aborted) ac.abort(signal.reason);
  else signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await fn(ac.signal);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

export function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

/** The MD5 of an object given as pieces, read once; pieces that do not add up to its length are refused. */
export function md5Pieces(data: ObjectPieces, what: string, ctx: ErrorContext): Buffer {
  const hash = createHash('md5');
  let total = 0;
  for (const piece of data.pieces()) {
    hash.update(piece);
    total += piece.length;
  }
  if (total !== data.length) throw new BackendError(`${what}: the pieces held ${total} bytes, not the length given, ${data.length}`, ctx);
  return hash.digest();
}

/** The pieces read again as a request body, each in memory of its own (HTTP clients refuse shared memory). */
export function piecesStream(data: ObjectPieces): Readable {
  return Readable.from((function* () {
    for (const piece of data.pieces()) yield ownMemory(piece);
  })(), { objectMode: false });
}

/** The object's size in a Content-Range answer to a one-range request ("bytes 0-99/1000"). */
export function rangeSize(contentRange: string | null | undefined, what: string, ctx: ErrorContext): number {
  const m = /^bytes \d+-\d+\/(\d+)$/.exec(contentRange ?? '');
  if (!m) throw new BackendError(`${what}: the server answered Content-Range ${contentRange ?? '(none)'}, not bytes first-last/size`, ctx);
  return Number(m[1]);
}
