import { swiftBackend, uniqueName } from '../support/swift-server.js';
import { backendConformance } from './conformance.js';

backendConformance({
  name: 'swift',
  make: (container) => swiftBackend(container),
  paged: (container, pageSize) => swiftBackend(container, { pageSize }),
  fresh: (label) => uniqueName(label),
});
