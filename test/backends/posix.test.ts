import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { PosixBackend } from '../../src/backends/posix.js';
import { BackendError } from '../../src/errors.js';
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

describe('posix errors', () => {
  it('a read-only repository is named as such, not as a missing directory', async (t) => {
    // A real read-only filesystem (the suite runs as root, as it installs its servers).
    const ro = path.join(tmp.dir, 'read-only');
    fs.mkdirSync(ro);
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,ro', 'tmpfs', ro], { encoding: 'utf8' });
    assert.equal(mount.status, 0, `mounting a read-only tmpfs for this test needs root: ${mount.stderr}`);
    t.after(() => spawnSync('umount', [ro]));
    const b = new PosixBackend(path.join(ro, 'repo'));
    await assert.rejects(b.ensureContainer('a/b'), (err: Error) =>
      err instanceof BackendError && err.message.includes(`cannot create container directory ${ro}/repo/a/b: EROFS: read-only file system, mkdir '${ro}/repo'`));
    await assert.rejects(b.put('c', 'd/e', Buffer.from('x')), (err: Error) => err instanceof BackendError && /EROFS/.test(err.message));
  });
});

describe('posix objects of any size a Buffer can hold', () => {
  const GiB = 1024 ** 3;
  const repo = path.join(tmp.dir, 'large');
  const b = new PosixBackend(repo);

  const zeros = (data: Buffer) => {
    const none = Buffer.alloc(64 * 1024 * 1024);
    for (let at = 0; at < data.length; at += none.length) {
      const piece = data.subarray(at, at + none.length);
      if (!piece.equals(none.subarray(0, piece.length))) return false;
    }
    return true;
  };

  /** A sparse object of `size` bytes: no disk blocks but those of the bytes written. */
  function sparseObject(name: string, size: number, marks: Record<number, string> = {}): string {
    fs.mkdirSync(path.join(repo, 'c'), { recursive: true });
    const file = path.join(repo, 'c', name);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, size);
    const fd = fs.openSync(file, 'r+');
    try {
      for (const [at, text] of Object.entries(marks)) fs.writeSync(fd, text, Number(at));
    } finally {
      fs.closeSync(fd);
    }
    return file;
  }

  it('reads an object larger than 2 GiB (fs.readFile refuses those)', { timeout: 300_000 }, async () => {
    const size = 2 * GiB + 4097;
    // Marks at the start, across the 2 GiB line, and at the end.
    const file = sparseObject('x_sha256file', size, { 0: 'first', [2 * GiB - 3]: 'across', [size - 4]: 'last' });
    try {
      let got: Buffer | undefined = await b.get('c', 'x_sha256file');
      assert.equal(got.length, size);
      assert.equal(got.toString('latin1', 0, 5), 'first');
      assert.equal(got.toString('latin1', 2 * GiB - 3, 2 * GiB + 3), 'across');
      assert.equal(got.toString('latin1', size - 4), 'last');
      assert.ok(zeros(got.subarray(5, 2 * GiB - 3)) && zeros(got.subarray(2 * GiB + 3, size - 4)), 'zeros between the marks');
      got = undefined;
    } finally {
      fs.rmSync(file);
    }
  });

  it('names an object larger than a Buffer can hold', async () => {
    const size = 4 * GiB + 1;
    const file = sparseObject('huge-00001', size);
    try {
      await assert.rejects(b.get('c', 'huge-00001'), {
        name: 'BackendError',
        message: `cannot read ${file}: File size (${size}) is greater than ${4 * GiB} bytes, the most one Buffer can hold`,
      });
    } finally {
      fs.rmSync(file);
    }
  });
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
