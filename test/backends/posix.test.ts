import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
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

describe('posix durability', () => {
  it('fsyncs the directories a new container was created in, not only the container', async () => {
    const repo = path.join(tmp.dir, 'durable');
    fs.mkdirSync(repo);
    const b = new PosixBackend(repo);
    const synced: string[] = [];
    const open = fs.promises.open;
    fs.promises.open = async (...args: Parameters<typeof open>) => {
      const fh = await open(...args);
      if (typeof args[1] === 'number' && (args[1] & fs.constants.O_DIRECTORY) !== 0) {
        const sync = fh.sync.bind(fh);
        fh.sync = async () => {
          await sync();
          synced.push(path.relative(repo, String(args[0])) || '.');
        };
      }
      return fh;
    };
    try {
      await b.ensureContainer('ab/cd/ef');
      await b.put('ab/cd/ef', 'x_metadata', Buffer.from('{}'));
      await b.flush('ab/cd/ef');
      assert.deepEqual(synced.sort(), ['.', 'ab', 'ab/cd', 'ab/cd/ef']);
      // Done once: a second flush has nothing left to sync.
      await b.flush('ab/cd/ef');
      assert.equal(synced.length, 4);
    } finally {
      fs.promises.open = open;
    }
  });
});
