/**
 * A stream written in position order from pieces that arrive in any order: each piece waits
 * until every byte before it is written, and its promise settles once the stream is done with
 * it (then the caller may reuse the memory).
 */
import { WriteStream } from 'node:fs';
import { Socket } from 'node:net';
import type { Writable } from 'node:stream';

/**
 * Whether `stream` writes to a descriptor and is done with a chunk when its callback runs.
 * Other Writables may keep what they were given (a PassThrough does): they get copies.
 */
function writesThrough(stream: Writable): boolean {
  return stream instanceof Socket || stream instanceof WriteStream || stream === process.stdout || stream === process.stderr;
}

interface Piece {
  data: Uint8Array;
  resolve(): void;
  reject(err: Error): void;
}

export class OrderedStream {
  /** Bytes written so far: the position the next piece must start at. */
  private next = 0;
  private readonly waiting = new Map<number, Piece>();
  private pumping = false;
  /** The piece being written now. */
  private current: Piece | undefined;
  private failed: Error | undefined;
  private readonly copies: boolean;

  private readonly onError = (err: Error) => this.fail(err);

  constructor(private readonly stream: Writable) {
    this.copies = !writesThrough(stream);
    // A broken pipe arrives as an 'error' event as well as through the write callback.
    stream.on('error', this.onError);
  }

  /** Stops listening to the stream (which stays open: it is the caller's). */
  detach(): void {
    this.stream.off('error', this.onError);
  }

  get written(): number {
    return this.next;
  }

  write(data: Uint8Array, position: number): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (position < this.next || this.waiting.has(position)) {
      return Promise.reject(new Error(`a piece at position ${position} was already written`));
    }
    return new Promise((resolve, reject) => {
      this.waiting.set(position, { data, resolve, reject });
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (let piece = this.waiting.get(this.next); piece && !this.failed; piece = this.waiting.get(this.next)) {
        this.waiting.delete(this.next);
        const p = piece;
        this.current = p;
        try {
          const chunk = this.copies ? Buffer.from(p.data) : p.data;
          await new Promise<void>((resolve, reject) => this.stream.write(chunk, (err) => (err ? reject(err) : resolve())));
        } catch (err) {
          this.fail(err as Error);
          return;
        } finally {
          this.current = undefined;
        }
        this.next += p.data.length;
        p.resolve();
      }
    } finally {
      this.pumping = false;
    }
  }

  /**
   * Gives up: every piece not yet written, and the one being written, rejects with `err` now
   * (a reader that stopped reading must not hold up a cancel). The stream may still hold the
   * piece being written: the caller destroys it, or is about to exit.
   */
  abort(err: Error): void {
    this.fail(err);
  }

  private fail(err: Error): void {
    this.failed ??= err;
    this.current?.reject(this.failed);
    for (const [position, piece] of this.waiting) {
      this.waiting.delete(position);
      piece.reject(this.failed);
    }
  }
}
