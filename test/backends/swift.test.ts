import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { startRangeIgnoringServer } from '../support/range-ignoring-server.js';
import { swiftBackend, uniqueName } from '../support/swift-server.js';
import { backendConformance } from './conformance.js';

backendConformance({
  name: 'swift',
  make: (container) => swiftBackend(container),
  paged: (container, pageSize) => swiftBackend(container, { pageSize }),
  fresh: (label) => uniqueName(label),
});

describe('Swift ranges', () => {
  it('a server that ignores Range sends the whole object: readRange takes its part', async () => {
    const data = randomBytes(10_000);
    const server = await startRangeIgnoringServer(data);
    const b = swiftBackend('c', { authUrl: `${server.url}/auth/v1.0` });
    try {
      const part = await b.readRange('c', 'x', 9990, 100);
      assert.deepEqual({ bytes: part.bytes, size: part.size }, { bytes: data.subarray(9990), size: 10_000 });
      const past = await b.readRange('c', 'x', 10_000, 5);
      assert.deepEqual([past.bytes.length, past.size], [0, 10_000]);
      assert.deepEqual(server.ranges, ['bytes=9990-10089', 'bytes=10000-10004']);
    } finally {
      await b.close();
      await server.close();
    }
  });
});
