/**
 * Reading a whole file (or a range of it) into one Buffer. fs.readFile refuses files over
 * 2 GiB, but an object may be as large as a Buffer can be (a large chunk, a sha256file written
 * by another tool): the file is read into one Buffer of its size, a piece at a time.
 */
import { constants } from 'node:buffer';
import { promises as fsp } from 'node:fs';

/** Bytes per read: one read(2) returns at most 2 GiB - 4 KiB. */
export const READ_PIECE = 8 * 1024 * 1024;

export interface ReadWholeOptions {
  signal?: AbortSignal;
  /** Bytes per read (tests use small ones). */
  piece?: number;
}

/**
 * The file's bytes, as fs.readFile gives them: up to its end at the time of reading (a file
 * that shrinks gives what is left), in memory of their own (which can move to a worker
 * thread); an abort rejects with an AbortError whose cause is the signal's reason.
 */
export async function readWhole(file: string, o: ReadWholeOptions = {}): Promise<Buffer> {
  return (await readFileRange(file, 0, Infinity, o)).bytes;
}

/**
 * Up to `length` of the file's bytes from `offset` (fewer at its end, none from its end on),
 * read as readWhole reads them, and the file's size.
 */
export async function readFileRange(file: string, offset: number, length: number, o: ReadWholeOptions = {}): Promise<{ bytes: Buffer; size: number }> {
  const piece = o.piece ?? READ_PIECE;
  const checkAborted = () => {
    if (!o.signal?.aborted) return;
    const err = new Error('The operation was aborted', { cause: o.signal.reason });
    err.name = 'AbortError';
    throw err;
  };
  checkAborted();
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const want = Math.max(0, Math.min(length, size - offset));
    if (want > constants.MAX_LENGTH) {
      const what = want === size ? `File size (${size})` : `Range length (${want})`;
      throw new RangeError(`${what} is greater than ${constants.MAX_LENGTH} bytes, the most one Buffer can hold`);
    }
    const out = Buffer.allocUnsafeSlow(want);
    let at = 0;
    while (at < want) {
      checkAborted();
      const { bytesRead } = await fh.read(out, at, Math.min(piece, want - at), offset + at);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
    return { bytes: at === want ? out : out.subarray(0, at), size };
  } finally {
    await fh.close();
  }
}
