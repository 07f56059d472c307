import * as path from 'node:path';
import { after } from 'node:test';
import { PosixBackend } from '../../src/backends/posix.js';
import { scratch } from '../support/cinder-fixtures.js';
import { uniqueName } from '../support/swift-server.js';
import { backendConformance } from './conformance.js';

const tmp = scratch('posix-conformance');
after(() => tmp.cleanup());
const root = path.join(tmp.dir, 'repo');

backendConformance({
  name: 'posix',
  make: () => new PosixBackend(root),
  paged: () => new PosixBackend(root),
  fresh: (label) => `c1/${uniqueName(label)}`,
});
