/**
 * A TCP proxy on 127.0.0.1 in front of a real server that injects faults on a fixed
 * schedule: every `every`-th request is answered by a connection reset, an HTTP 503, or a
 * stall (no answer until the client gives up), in turn, at most `maxFaults` times.
 */
import * as net from 'node:net';

export type Fault = 'reset' | '503' | 'stall';

export interface FaultProxy {
  url: string;
  injected: Record<Fault, number>;
  close(): Promise<void>;
}

const REQUEST_START = /^(GET|PUT|HEAD|POST|DELETE) \//;

export async function startFaultProxy(target: { host: string; port: number }, opts: { every: number; maxFaults: number; faults?: Fault[] }): Promise<FaultProxy> {
  const faults = opts.faults ?? ['reset', '503', 'stall'];
  const injected: Record<Fault, number> = { reset: 0, '503': 0, stall: 0 };
  let requests = 0;
  let total = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(target.port, target.host);
    sockets.add(upstream);
    let stalled = false;
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (stalled) return;
      if (REQUEST_START.test(chunk.subarray(0, 8).toString('latin1'))) {
        requests++;
        if (requests % opts.every === 0 && total < opts.maxFaults) {
          const fault = faults[total % faults.length]!;
          total++;
          injected[fault]++;
          if (fault === 'reset') return void (client.resetAndDestroy(), upstream.destroy());
          if (fault === '503') {
            client.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
            return void upstream.destroy();
          }
          stalled = true; // never answer: the client's timeout must fire
          return void upstream.destroy();
        }
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => client.write(chunk));
    client.on('error', end).on('close', () => (upstream.destroy(), sockets.delete(client)));
    upstream.on('error', end).on('close', () => {
      sockets.delete(upstream);
      if (!stalled) client.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    injected,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
