import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readsPartOfWholeAnswer } from '../support/range-ignoring-server.js';
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
    await readsPartOfWholeAnswer('c', (url) => swiftBackend('c', { authUrl: `${url}/auth/v1.0` }));
  });
});
