import { setTimeout as sleep } from 'node:timers/promises';
import { TransientBackendError } from '../errors.js';
import type { Backend, BackendStats, CallOptions, ListOptions, ObjectPieces, ObjectRange } from './backend.js';

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

  readonly sweep?: Backend['sweep'];

  constructor(readonly inner: Backend, policy: Partial<RetryPolicy> = {}) {
    this.policy = { ...DEFAULT_RETRY, ...policy };
    const sweep = inner.sweep?.bind(inner);
    if (sweep) this.sweep = (container, prefix, opts) => this.run(() => sweep(container, prefix, opts), opts);
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
  get maxObjectBytes() {
    return this.inner.maxObjectBytes;
  }

  private async run<T>(fn: () => Promise<T>, opts?: CallOptions): Promise<T> {
    const faults = this.faults(opts);
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        await faults.next(err);
      }
    }
  }

  /**
   * Counts the faults of one call and waits before its next try; rethrows what is not a
   * transient fault, and the fault that ends the tries. The time bound counts from the first
   * fault: a request that timed out is still tried again.
   */
  private faults(opts?: CallOptions) {
    const signal = opts?.signal;
    let attempt = 0;
    let firstFault: number | undefined;
    return {
      next: async (err: unknown): Promise<void> => {
        if (!(err instanceof TransientBackendError) || signal?.aborted) throw err;
        attempt++;
        firstFault ??= Date.now();
        const delay = Math.random() * Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** (attempt - 1));
        if (attempt >= this.policy.attempts || Date.now() - firstFault + delay > this.policy.totalMs) {
          throw new TransientBackendError(`${err.message} (gave up after ${attempt} attempts)`, err.context);
        }
        this.stats.retries++;
        opts?.onRetry?.();
        await sleep(delay, undefined, { signal });
      },
      /** A call that made progress (a listing page came through) starts its count again. */
      reset: () => {
        attempt = 0;
        firstFault = undefined;
      },
    };
  }

  ensureContainer(container: string, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.ensureContainer(container, opts), opts);
  }

  async *list(container: string, prefix: string, opts?: ListOptions): AsyncIterable<string> {
    // Names come in order: after a fault the listing resumes after the last name it gave.
    const faults = this.faults(opts);
    let after = opts?.after;
    for (;;) {
      try {
        for await (const name of this.inner.list(container, prefix, { ...opts, after })) {
          after = name;
          faults.reset();
          yield name;
        }
        return;
      } catch (err) {
        await faults.next(err);
      }
    }
  }

  put(container: string, name: string, data: Uint8Array, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.put(container, name, data, opts), opts);
  }

  /** Each try reads the pieces from the start. */
  putPieces(container: string, name: string, data: ObjectPieces, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.putPieces(container, name, data, opts), opts);
  }

  get(container: string, name: string, opts?: CallOptions): Promise<Buffer> {
    return this.run(() => this.inner.get(container, name, opts), opts);
  }

  readRange(container: string, name: string, offset: number, length: number, opts?: CallOptions): Promise<ObjectRange> {
    return this.run(() => this.inner.readRange(container, name, offset, length, opts), opts);
  }

  exists(container: string, name: string, opts?: CallOptions): Promise<boolean> {
    return this.run(() => this.inner.exists(container, name, opts), opts);
  }

  delete(container: string, name: string, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.delete(container, name, opts), opts);
  }

  flush(container: string, opts?: CallOptions): Promise<void> {
    return this.run(() => this.inner.flush(container, opts), opts);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
