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

/** A trial for alignedView: an O_DIRECT read of the block of `fh` at `position` (reading changes nothing). */
export function readTrial(fh: FileHandle, position = 0): (view: Buffer) => Promise<void> {
  return async (view) => void (await fh.read(view, 0, ALIGN, position));
}

/**
 * A block of the file `fh` (O_DIRECT, `size` bytes) where a read checks the memory's alignment,
 * for readTrial: the filesystem fills a hole of a sparse file with zeros without looking at the
 * memory, so a trial there accepts any start. Blocks at doubling distances and the last one
 * are tried (a leading hole of any length is passed in a few reads) with memory at an odd
 * address, which a device that checks alignment refuses. 0 when no block refuses it: either
 * the memory's alignment does not matter, or the trial is only a hint.
 */
export async function alignmentCheckedAt(fh: FileHandle, size: number): Promise<number> {
  const odd = Buffer.alloc(ALIGN + 1).subarray(1);
  const last = Math.floor(size / ALIGN) * ALIGN - ALIGN;
  const blocks = [0];
  for (let p = ALIGN; p < last; p *= 2) blocks.push(p);
  if (last > 0) blocks.push(last);
  for (const position of blocks) {
    try {
      await fh.read(odd, 0, ALIGN, position);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EINVAL' ? position : 0;
    }
  }
  return 0;
}

/** Remembers which memory has an aligned start, so that views into it can be checked. */
export class AlignedMemory {
  private readonly origin = new WeakMap<ArrayBufferLike, number>();

  add(view: Buffer): Buffer {
    this.origin.set(view.buffer, view.byteOffset);
    return view;
  }

  /** Forgets the memory of `view`: it is not aligned after all. */
  forget(view: Uint8Array): void {
    this.origin.delete(view.buffer);
  }

  /** Whether `view` starts at an aligned address of memory added here. */
  isAligned(view: Uint8Array): boolean {
    const o = this.origin.get(view.buffer);
    return o !== undefined && (view.byteOffset - o) % ALIGN === 0;
  }
}
