/**
 * An object store on 127.0.0.1 that ignores Range headers, as some servers and proxies do:
 * every GET answers 200 with the whole of one object. It authenticates Swift clients
 * (tempauth's /auth/v1.0) and takes any S3 signature; it records the Range headers it got.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Backend } from '../../src/backends/backend.js';

export interface RangeIgnoringServer {
  url: string;
  ranges: (string | undefined)[];
  close(): Promise<void>;
}

export async function startRangeIgnoringServer(object: Uint8Array): Promise<RangeIgnoringServer> {
  const ranges: (string | undefined)[] = [];
  const server = http.createServer((req, res) => {
    const { port } = server.address() as AddressInfo;
    if (req.url === '/auth/v1.0') {
      res.writeHead(200, { 'x-auth-token': 'token', 'x-storage-url': `http://127.0.0.1:${port}/v1/AUTH_test`, 'content-length': 0 }).end();
      return;
    }
    ranges.push(req.headers.range);
    res.writeHead(200, { 'content-length': object.length, 'content-type': 'application/octet-stream' }).end(req.method === 'HEAD' ? undefined : object);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ranges,
    close: () => new Promise((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

/**
 * Checks that a backend made for such a server (given its address) takes its part of the whole
 * object it is sent, and tells the object's size, within it and past its end.
 */
export async function readsPartOfWholeAnswer(container: string, backendFor: (url: string) => Backend): Promise<void> {
  const data = randomBytes(10_000);
  const server = await startRangeIgnoringServer(data);
  const b = backendFor(server.url);
  try {
    const part = await b.readRange(container, 'x', 9990, 100);
    assert.deepEqual({ bytes: part.bytes, size: part.size }, { bytes: data.subarray(9990), size: 10_000 });
    const past = await b.readRange(container, 'x', 10_000, 5);
    assert.deepEqual([past.bytes.length, past.size], [0, 10_000]);
    assert.deepEqual(server.ranges, ['bytes=9990-10089', 'bytes=10000-10004']);
  } finally {
    await b.close();
    await server.close();
  }
}
