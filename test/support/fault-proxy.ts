/**
 * A TCP proxy on 127.0.0.1 in front of a real server that injects faults on a fixed
 * schedule: every `every`-th request is answered by a connection reset, an HTTP 503, or a
 * stall (no answer until the client gives up), in turn, at most `maxFaults` times; or, with
 * `decide`, the fault each request gets.
 */
import * as net from 'node:net';

export type Fault = 'reset' | '503' | 'stall' | '404' | 'no-etag' | 'odd-etag' | 'delay' | 'corrupt';

export interface FaultProxy {
  url: string;
  injected: Record<Fault, number>;
  close(): Promise<void>;
}

const REQUEST_START = /^(GET|PUT|HEAD|POST|DELETE) \//;

export interface FaultProxyOptions {
  every?: number;
  maxFaults?: number;
  faults?: Fault[];
  /**
   * Picks the fault of each request instead of the schedule: '404', 'no-etag' (an empty 200)
   * and 'odd-etag' (a web server's 200) answer in the server's place; 'corrupt' flips the last byte of a small request's body; 'delay' holds the request for `delayMs` and then passes
   * it on even if the client has given up (the server still acts on it).
   */
  decide?: (request: { method: string; path: string }) => Fault | undefined;
  delayMs?: number;
  /**
   * While it says so, a request on a connection that already carried one is reset: idle
   * keep-alive connections a server (or load balancer) closed without the client noticing.
   */
  resetReused?: () => boolean;
}

export async function startFaultProxy(target: { host: string; port: number }, opts: FaultProxyOptions): Promise<FaultProxy> {
  const faults = opts.faults ?? ['reset', '503', 'stall'];
  const injected: Record<Fault, number> = { reset: 0, '503': 0, stall: 0, '404': 0, 'no-etag': 0, 'odd-etag': 0, delay: 0, corrupt: 0 };
  let requests = 0;
  let total = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(target.port, target.host);
    sockets.add(upstream);
    let stalled = false;
    let carried = 0; // requests this connection has carried
    let held: Buffer[] | undefined; // a delayed request, until it is passed on
    let keepUpstream = false;
    const end = () => {
      client.destroy();
      if (!keepUpstream) upstream.destroy();
    };
    const answer = (status: string) => {
      client.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (stalled) return;
      if (held) return void held.push(chunk);
      const head = chunk.subarray(0, 2048).toString('latin1');
      if (REQUEST_START.test(head)) {
        requests++;
        if (++carried > 1 && opts.resetReused?.()) return void (client.resetAndDestroy(), upstream.destroy());
        let fault: Fault | undefined;
        if (opts.decide) {
          const [method = '', path = ''] = head.split(' ', 2);
          fault = opts.decide({ method, path });
        } else if (requests % (opts.every ?? Infinity) === 0 && total < (opts.maxFaults ?? 0)) {
          fault = faults[total % faults.length]!;
          total++;
        }
        if (fault) {
          injected[fault]++;
          if (fault === 'reset') return void (client.resetAndDestroy(), upstream.destroy());
          if (fault === '503') return answer('503 Service Unavailable');
          if (fault === '404') return answer('404 Not Found');
          if (fault === 'no-etag') return answer('200 OK');
          if (fault === 'odd-etag') return answer('200 OK\r\nETag: "64b8f3a1-d"');
          if (fault === 'corrupt') {
            // One byte of the body flipped on the way (a body that came with its headers).
            const body = chunk.indexOf('\r\n\r\n') + 4;
            if (body >= 4 && body < chunk.length) chunk[chunk.length - 1]! ^= 0xff;
            return void upstream.write(chunk);
          }
          if (fault === 'delay') {
            held = [chunk];
            keepUpstream = true;
            setTimeout(() => {
              for (const c of held!) upstream.write(c);
              held = undefined;
            }, opts.delayMs ?? 1000);
            return;
          }
          stalled = true; // never answer: the client's timeout must fire
          return void upstream.destroy();
        }
      }
      upstream.write(chunk);
    });
    // Once the client is gone, a delayed request's answer goes nowhere.
    upstream.on('data', (chunk) => (client.destroyed ? upstream.end() : client.write(chunk)));
    client.on('error', end).on('close', () => {
      if (!keepUpstream) upstream.destroy();
      sockets.delete(client);
    });
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
