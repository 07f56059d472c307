import type { MessagePort, Worker } from 'node:worker_threads';

/**
 * Posts `message`, moving (not copying) the memory of the given views when each one owns
 * its whole ArrayBuffer; views into shared or pooled memory are copied. Falls back to a
 * plain copy when a buffer cannot be detached (e.g. memory owned by a native addon).
 */
export function postWithTransfer(port: MessagePort | Worker, message: unknown, views: Uint8Array[]): void {
  const transfer = new Set<ArrayBuffer>();
  for (const v of views) {
    if (v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) {
      transfer.add(v.buffer);
    }
  }
  try {
    port.postMessage(message, [...transfer]);
  } catch (err) {
    if ((err as Error).name !== 'DataCloneError') throw err;
    port.postMessage(message);
  }
}
