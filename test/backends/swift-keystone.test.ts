/**
 * The Swift backend authenticating with Keystone v3 (a real Keystone, and a Swift proxy that
 * validates its tokens): the conformance suite, token reuse and renewal, the catalog's
 * endpoint selection, refused credentials, and the CLI configured by OS_* variables.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { SwiftBackend, swiftAuthFromEnv } from '../../src/backends/swift.js';
import { BackendError, InvalidInputError, TransientBackendError } from '../../src/errors.js';
import { scratch } from '../support/cinder-fixtures.js';
import { startHttpRecorder } from '../support/http-recorder.js';
import { mixedVolume, pseudoRandom } from '../support/engine-helpers.js';
import { keystoneServer, keystoneSwiftBackend, uniqueName } from '../support/swift-server.js';
import { backendConformance } from './conformance.js';

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

backendConformance({
  name: 'swift (Keystone v3)',
  make: (container) => keystoneSwiftBackend(container),
  paged: (container, pageSize) => keystoneSwiftBackend(container, { pageSize }),
  fresh: (label) => uniqueName(label),
});

async function adminToken(): Promise<string> {
  const ks = keystoneServer();
  const res = await fetch(`${ks.authUrl}/auth/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      auth: {
        identity: { methods: ['password'], password: { user: { name: ks.admin.username, domain: { name: 'Default' }, password: ks.admin.password } } },
        scope: { project: { name: ks.admin.projectName, domain: { name: 'Default' } } },
      },
    }),
  });
  assert.equal(res.status, 201);
  await res.body?.cancel();
  return res.headers.get('x-subject-token')!;
}

describe('swift with Keystone v3', () => {
  it('reuses one token for many requests, and renews it once when Keystone revokes it', async () => {
    const ks = keystoneServer();
    const recorder = await startHttpRecorder(ks.authUrl);
    const issued = () => recorder.exchanges.filter((x) => x.method === 'POST' && x.status === 201).map((x) => x.headers['x-subject-token'] as string);
    const container = uniqueName('ks-token');
    const b = keystoneSwiftBackend(container, { auth: { authUrl: `http://127.0.0.1:${recorder.port}/v3` } });
    try {
      await b.ensureContainer(container);
      const data = pseudoRandom(100_000, 1);
      await Promise.all(Array.from({ length: 12 }, (_, i) => b.put(container, `o/${i}`, data)));
      assert.equal((await b.get(container, 'o/3')).compare(data), 0);
      assert.equal(issued().length, 1, 'one token for the container, 12 puts and a get');

      const revoke = await fetch(`${ks.authUrl}/auth/tokens`, {
        method: 'DELETE', headers: { 'x-auth-token': await adminToken(), 'x-subject-token': issued()[0]! },
      });
      assert.equal(revoke.status, 204);
      await new Promise((resolve) => setTimeout(resolve, 2500)); // the proxy's token cache lasts 2 s
      const listed: string[] = [];
      for await (const n of b.list(container, 'o/')) listed.push(n);
      assert.equal(listed.length, 12, 'the listing succeeds after the token was revoked');
      assert.equal(issued().length, 2, 'exactly one new token after the 401');
      await b.get(container, 'o/0');
      assert.equal(issued().length, 2);
    } finally {
      await recorder.close();
    }
  });

  it('picks the object-store endpoint from the catalog by interface and region', async () => {
    const container = uniqueName('ks-endpoint');
    const internal = keystoneSwiftBackend(container, { auth: { interface: 'internal', region: 'RegionOne' } });
    await internal.ensureContainer(container);
    await internal.put(container, 'x', Buffer.from('internal endpoint'));
    assert.equal((await keystoneSwiftBackend(container, { auth: { interface: 'publicURL' } }).get(container, 'x')).toString(), 'internal endpoint');

    const nowhere = keystoneSwiftBackend(container, { auth: { region: 'Atlantis' } });
    await assert.rejects(nowhere.get(container, 'x'), (err: Error) =>
      err instanceof BackendError && /service catalog has no public object-store endpoint in region Atlantis/.test(err.message));

    // RegionTwo's endpoint is a port nothing listens on: the error names the refused address.
    // (The default request timeout: a loaded Keystone may take seconds to issue the token.)
    const ks = keystoneServer();
    const dead = new SwiftBackend({ container, auth: { ...ks.user, authUrl: ks.authUrl, region: 'RegionTwo' } });
    const refused = new RegExp(`ECONNREFUSED ${new URL(ks.deadUrl).host.replace(/[.]/g, '\\.')}\\b`);
    await assert.rejects(dead.get(container, 'x'), (err: Error) => err instanceof TransientBackendError && refused.test(err.message));
  });

  it('refuses a wrong password and a user without a role on the project, naming Keystone, never the secret', async () => {
    const ks = keystoneServer();
    const container = uniqueName('ks-denied');
    const cases = [
      { ...ks.user, password: 'not-the-password' },
      { ...ks.outsider, projectName: ks.user.projectName },
      { ...ks.user, projectName: 'no-such-project' },
    ];
    for (const creds of cases) {
      const b = keystoneSwiftBackend(container, { auth: creds });
      await assert.rejects(b.ensureContainer(container), (err: Error) => {
        assert.ok(err instanceof BackendError, String(err));
        assert.match(err.message, new RegExp(`^swift auth at ${ks.authUrl.replace(/[.]/g, '\\.')}: access denied \\(HTTP 401\\)`));
        assert.ok(!err.message.includes(creds.password));
        return true;
      });
    }
  });

  it('reads OS_* variables: project by name or id, v3 added to a bare auth URL, v2.0 and unscoped refused', () => {
    const base = { OS_AUTH_URL: 'http://keystone.example:5000', OS_USERNAME: 'u', OS_PASSWORD: 'p' };
    assert.throws(() => swiftAuthFromEnv(undefined, base), (err: Error) => err instanceof InvalidInputError && /set OS_PROJECT_NAME or OS_PROJECT_ID/.test(err.message));
    assert.throws(() => swiftAuthFromEnv(undefined, { ...base, OS_AUTH_URL: 'http://k:5000/v2.0', OS_PROJECT_NAME: 'x' }), /Keystone v2\.0/);
    const a = swiftAuthFromEnv(undefined, { ...base, OS_PROJECT_ID: 'abc', OS_USER_DOMAIN_ID: 'default', OS_REGION_NAME: 'R' });
    assert.deepEqual([a.projectId, a.userDomainId, a.region], ['abc', 'default', 'R']);
    assert.equal(swiftAuthFromEnv(undefined, { ST_AUTH: 'http://s/auth/v1.0', ST_USER: 'a:b', ST_KEY: 'k' }).projectName, undefined, 'tempauth needs no project');
  });

  describe('the CLI with OS_* variables', () => {
    const tmp = scratch('swift-keystone-cli');
    after(() => tmp.cleanup());

    it('backs up, incrementally backs up and restores byte for byte; the password is nowhere in output, catalog or repository', async () => {
      const ks = keystoneServer();
      // project by id, domains by id: the other spelling of an openrc file
      const projectId = await (async () => {
        const r = await fetch(`${ks.authUrl}/projects?name=${ks.user.projectName}`, { headers: { 'x-auth-token': await adminToken() } });
        return ((await r.json()) as { projects: { id: string }[] }).projects[0]!.id;
      })();
      const container = uniqueName('ks-cli');
      const catalog = path.join(tmp.dir, 'catalog.db');
      const env = {
        ...process.env, CHUNKVAULT_CATALOG: catalog, ST_AUTH: '', ST_USER: '', ST_KEY: '',
        OS_AUTH_URL: ks.authUrl.replace(/\/v3$/, ''), OS_USERNAME: ks.user.username, OS_PASSWORD: ks.user.password,
        OS_PROJECT_ID: projectId, OS_USER_DOMAIN_ID: 'default', OS_REGION_NAME: 'RegionOne', OS_INTERFACE: 'public',
      };
      const cv = (...args: string[]) => {
        const r = spawnSync(process.execPath, [MAIN, ...args, '--repo', `swift://${container}`, '--json'], { env, encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        assert.ok(!r.stdout.includes(ks.user.password) && !r.stderr.includes(ks.user.password));
        return JSON.parse(r.stdout);
      };
      const v1 = mixedVolume(3 * 1024 * 1024, 11);
      const v2 = Buffer.from(v1);
      pseudoRandom(200_000, 12).copy(v2, 1_000_000);
      const vol = path.join(tmp.dir, 'disk.img');
      writeFileSync(vol, v1);
      const full = cv('backup', vol, '--chunk-size', '1M');
      writeFileSync(vol, v2);
      const incr = cv('backup', vol, '--incremental', '--chunk-size', '1M');
      assert.equal(incr.parent_id, full.id);
      assert.ok(incr.stored_bytes < v2.length / 4, `the incremental stored ${incr.stored_bytes} bytes`);
      const out = path.join(tmp.dir, 'restored.img');
      cv('restore', incr.id, out);
      assert.equal(readFileSync(out).compare(v2), 0);
      assert.ok(!readFileSync(catalog).includes(ks.user.password), 'the catalog holds no password');

      const b = keystoneSwiftBackend(container);
      const names: string[] = [];
      for await (const n of b.list(container, '')) names.push(n);
      assert.ok(names.some((n) => n.endsWith('_metadata')) && names.length >= 6, names.join(' '));
      for (const n of names.filter((x) => x.endsWith('_metadata'))) assert.ok(!(await b.get(container, n)).includes(ks.user.password));
    });
  });
});
