/**
 * An HTTP proxy on 127.0.0.1 that forwards every request unchanged (Host header included) to
 * a real server and records what passed: method, Host, path, status and response headers.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Exchange {
  method: string;
  host: string;
  path: string;
  status: number;
  headers: http.IncomingHttpHeaders;
}

export interface HttpRecorder {
  port: number;
  exchanges: Exchange[];
  close(): Promise<void>;
}

export async function startHttpRecorder(target: string): Promise<HttpRecorder> {
  const upstream = new URL(target);
  const exchanges: Exchange[] = [];
  const server = http.createServer((req, res) => {
    const fwd = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      exchanges.push({ method: req.method!, host: req.headers.host ?? '', path: req.url!, status: up.statusCode!, headers: up.headers });
      res.writeHead(up.statusCode!, up.headers);
      up.pipe(res);
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    exchanges,
    close: () => new Promise((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}
