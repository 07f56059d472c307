import * as path from 'node:path';
import { after } from 'node:test';
import { SqliteCatalog } from '../../src/catalog/sqlite.js';
import { scratch } from '../support/cinder-fixtures.js';
import { catalogConformance } from './conformance.js';
import { jobQueueConformance } from './job-conformance.js';

const tmp = scratch('sqlite-catalog');
after(() => tmp.cleanup());
let n = 0;
catalogConformance('sqlite', async () => new SqliteCatalog(path.join(tmp.dir, `catalog-${n++}.db`)));
jobQueueConformance('sqlite', async () => path.join(tmp.dir, `jobs-${n++}.db`));
