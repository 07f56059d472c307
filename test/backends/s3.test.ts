import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { S3Backend } from '../../src/backends/s3.js';
import { scratch } from '../support/cinder-fixtures.js';
import { mixedVolume } from '../support/engine-helpers.js';
import { startHttpRecorder } from '../support/http-recorder.js';
import { readsPartOfWholeAnswer } from '../support/range-ignoring-server.js';
import { s3Backend, swiftServer, uniqueName } from '../support/swift-server.js';
import { backendConformance } from './conformance.js';

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

backendConformance({
  name: 's3 (Swift s3api)',
  make: (bucket) => s3Backend(bucket),
  paged: (bucket, pageSize) => s3Backend(bucket, { pageSize }),
  fresh: (label) => uniqueName(label),
});

// The server's s3api answers <bucket>.s3.chunkvault.test (scripts/swift-saio.sh puts the
// names in /etc/hosts); a recording proxy in between shows which addressing reached it.
describe('S3 virtual-host addressing', () => {
  const tmp = scratch('s3-vhost');
  after(() => tmp.cleanup());
  const vhost = async () => {
    swiftServer();
    const domain = process.env.CHUNKVAULT_TEST_S3_VHOST_DOMAIN!;
    const bucket = process.env.CHUNKVAULT_TEST_S3_VHOST_BUCKET!;
    const recorder = await startHttpRecorder(swiftServer().url);
    return { domain, bucket, recorder, endpoint: `http://${domain}:${recorder.port}` };
  };

  it('puts, lists, gets and deletes with the bucket in the Host name, not in the path', async () => {
    const { domain, bucket, recorder, endpoint } = await vhost();
    try {
      const prefix = `vh-${randomBytes(4).toString('hex')}/`;
      const b = new S3Backend({ bucket, endpoint, region: 'us-east-1', pathStyle: false });
      await b.ensureContainer(bucket);
      await b.put(bucket, `${prefix}a/1`, Buffer.from('one'));
      await b.put(bucket, `${prefix}a/2`, Buffer.alloc(0));
      const names: string[] = [];
      for await (const n of b.list(bucket, prefix)) names.push(n);
      assert.deepEqual(names.sort(), [`${prefix}a/1`, `${prefix}a/2`]);
      assert.equal((await b.get(bucket, `${prefix}a/1`)).toString(), 'one');
      await b.delete(bucket, `${prefix}a/1`);
      await b.delete(bucket, `${prefix}a/2`);
      assert.ok(recorder.exchanges.length >= 6);
      for (const x of recorder.exchanges) {
        assert.equal(x.host, `${bucket}.${domain}:${recorder.port}`, `${x.method} ${x.path}`);
        assert.ok(!x.path.startsWith(`/${bucket}`), `${x.method} ${x.path}`);
      }

      // The same proxy sees path-style requests differently: the check above can tell them apart.
      recorder.exchanges.length = 0;
      const pathStyle = new S3Backend({ bucket, endpoint, region: 'us-east-1', pathStyle: true });
      await pathStyle.put(bucket, `${prefix}p`, Buffer.from('p'));
      await pathStyle.delete(bucket, `${prefix}p`);
      assert.deepEqual(recorder.exchanges.map((x) => [x.host, x.path.split('/')[1]]), [[`${domain}:${recorder.port}`, bucket], [`${domain}:${recorder.port}`, bucket]]);
    } finally {
      await recorder.close();
    }
  });

  it('backs up and restores through the CLI with path_style=false', async () => {
    const { domain, bucket, recorder, endpoint } = await vhost();
    try {
      const vol = path.join(tmp.dir, 'disk.img');
      const data = mixedVolume(2 * 1024 * 1024, 21);
      writeFileSync(vol, data);
      const env = { ...process.env, CHUNKVAULT_CATALOG: path.join(tmp.dir, 'catalog.db') };
      const repo = `s3://${bucket}?endpoint=${encodeURIComponent(endpoint)}&path_style=false`;
      // asynchronously: the recording proxy runs in this process
      const cv = async (...args: string[]) =>
        JSON.parse((await promisify(execFile)(process.execPath, [MAIN, ...args, '--repo', repo, '--json'], { env, encoding: 'utf8' })).stdout);
      const backup = await cv('backup', vol, '--chunk-size', '512K');
      const out = path.join(tmp.dir, 'restored.img');
      await cv('restore', backup.id, out);
      assert.equal(readFileSync(out).compare(data), 0);
      assert.ok(recorder.exchanges.some((x) => x.method === 'PUT' && x.path.startsWith(`/${backup.prefix}`)), 'objects were written host-style');
      assert.ok(recorder.exchanges.every((x) => x.host === `${bucket}.${domain}:${recorder.port}`));
    } finally {
      await recorder.close();
    }
  });
});

describe('S3 ranges', () => {
  it('a server that ignores Range sends the whole object: readRange takes its part', async () => {
    swiftServer(); // the test credentials
    await readsPartOfWholeAnswer('b', (url) => new S3Backend({ bucket: 'b', endpoint: url, region: 'us-east-1', pathStyle: true }));
  });
});
