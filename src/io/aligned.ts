/**
 * O_DIRECT I/O needs the memory address, the file offset and the length aligned to the
 * device's block size. Node cannot allocate aligned memory or tell an address, so an aligned
 * start inside a slightly larger allocation is found by trial I/O.
 */

import type { FileHandle } from 'node:fs/promises';

/** The alignment used for every O_DIRECT transfer (a multiple of every common block size). */
export const ALIGN = 4096;

/**
 * The view of `length` bytes inside `raw` (allocated with ALIGN spare bytes) whose start
 * `attempt` accepts: it is called with candidate views of ALIGN bytes and must throw EINVAL
 * for a misaligned one. Undefined when no start is accepted or another error occurs.
 */
export async function alignedView(raw: Buffer, length: number, attempt: (view: Buffer) => Promise<void>): Promise<Buffer | undefined> {
  for (let off = 0; off < ALIGN; off += 16) {
    try {
      await attempt(raw.subarray(off, off + ALIGN));
      return raw.subarray(off, off + length);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') return undefined;
    }
  }
  return undefined;
}

/** A trial for alignedView: an O_DIRECT read of the first block of `fh` (reading changes nothing). */
export function readTrial(fh: FileHandle): (view: Buffer) => Promise<void> {
  return async (view) => void (await fh.read(view, 0, ALIGN, 0));
}

/** Remembers which memory has an aligned start, so that views into it can be checked. */
export class AlignedMemory {
  private readonly origin = new WeakMap<ArrayBufferLike, number>();

  add(view: Buffer): Buffer {
    this.origin.set(view.buffer, view.byteOffset);
    return view;
  }

  /** Whether `view` starts at an aligned address of memory added here. */
  isAligned(view: Uint8Array): boolean {
    const o = this.origin.get(view.buffer);
    return o !== undefined && (view.byteOffset - o) % ALIGN === 0;
  }
}
