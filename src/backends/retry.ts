import { setTimeout as sleep } from 'node:timers/promises';
import { TransientBackendError } from '../errors.js';
import type { Backend, BackendStats, CallOptions } from './backend.js';

export interface RetryPolicy {
  /** Tries per call, the first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** No retry starts once a call has taken this long. */
  totalMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 250, maxDelayMs: 10_000, totalMs: 120_000 };

/**
 * Retries transient faults (TransientBackendError: resets, timeouts, 429/5xx) of any
 * backend with exponential backoff and full jitter, bounded in tries and time; other
 * errors pass at once. Every put/delete is idempotent, so a retried call is safe.
 */
export class RetryBackend implements Backend {
  readonly stats: BackendStats = { retries: 0 };
  private readonly policy: RetryPolicy;

  constructor(readonly inner: Backend, policy: Partial<RetryPolicy> = {}) {
    this.policy = { ...DEFAULT_RETRY, ...policy };
  }

  get kind() {
    return this.inner.kind;
  }
  get url() {
    return this.inner.url;
  }
  get nestedContainers() {
    return this.inner.nestedContainers;
  }
  get defaultContainer() {
    return this.inner.defaultContainer;
  }

  private async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof TransientBackendError) || signal?.aborted) throw err;
        const delay = Math.random() * Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** (attempt - 1));
        if (attempt >= this.policy.attempts || Date.now() - started + delay > this.policy.totalMs) {
          throw new TransientBackendError(`${err.message} (gave up after ${attempt} attempts)`, err.context);
        }
        this.stats.retries++;
        await sleep(delay, undefined, { signal });
      }
    }
  }

  ensureContainer(container: string, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.ensureContainer(container, opts), opts?.signal);
  }

  async *list(container: string, prefix: string, opts?: CallOptions): AsyncIterable<string> {
    // A listing restarts whole: a half-read one cannot resume safely across a fault.
    const names = await this.run(async () => {
      const all: string[] = [];
      for await (const name of this.inner.list(container, prefix, opts)) all.push(name);
      return all;
    }, opts?.signal);
    yield* names;
  }

  put(container: string, name: string, data: Uint8Array, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.put(container, name, data, opts), opts?.signal);
  }

  get(container: string, name: string, opts?: CallOptions): Promise<Buffer> {
    return this.run(() => this.inner.get(container, name, opts), opts?.signal);
  }

  delete(container: string, name: string, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.delete(container, name, opts), opts?.signal);
  }

  flush(container: string, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.flush(container, opts), opts?.signal);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
