/** Memory lent and returned instead of allocated per use. */

/**
 * Reusable buffers lent one at a time: made on demand up to `limit`, then a caller waits
 * for one to come back. Memory stays bounded and is not reallocated (or faulted in) again.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: ((b: Buffer) => void)[] = [];
  private made: number;
  constructor(private readonly limit: number, private readonly make: () => Promise<Buffer>, initial: Buffer[] = []) {
    this.free.push(...initial);
    this.made = initial.length;
  }

  async acquire(): Promise<Buffer> {
    const b = this.free.pop();
    if (b) return b;
    if (this.made < this.limit) {
      this.made++;
      return this.make().catch((err: unknown) => {
        this.made--;
        throw err;
      });
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(b: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(b);
    else this.free.push(b);
  }
}

/** Memory that worker threads can fill in place (a view of a SharedArrayBuffer). */
export function sharedBuffer(length: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(length));
}

/**
 * Up to `limit` shared buffers of `length` bytes, for data that worker threads produce in
 * place; `preferred` may supply specially placed ones (e.g. aligned for O_DIRECT).
 */
export function sharedBufferPool(
  length: number,
  limit: number,
  preferred?: (length: number) => Promise<Buffer | undefined>,
): BufferPool {
  return new BufferPool(limit, async () => (await preferred?.(length)) ?? sharedBuffer(length));
}
