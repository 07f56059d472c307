/**
 * An object store on 127.0.0.1 that ignores Range headers, as some servers and proxies do:
 * every GET answers 200 with the whole of one object. It authenticates Swift clients
 * (tempauth's /auth/v1.0) and takes any S3 signature; it records the Range headers it got.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

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
