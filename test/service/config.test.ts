/** Service configuration, token checks and the volume allow-list. */
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { InvalidInputError } from '../../src/errors.js';
import { AllowList } from '../../src/service/allow-list.js';
import { Authenticator } from '../../src/service/auth.js';
import { loadConfig } from '../../src/service/config.js';
import { scratch } from '../support/cinder-fixtures.js';

const tmp = scratch('service-config');
after(() => tmp.cleanup());

describe('service configuration', () => {
  it('reads tokens from the file, from named variables and from CHUNKVAULT_API_TOKENS', () => {
    const file = path.join(tmp.dir, 'c.json');
    writeFileSync(file, JSON.stringify({
      listen: '0.0.0.0:9000', volumes: ['/dev/vg0/*'], lease_seconds: 12, shutdown_timeout_seconds: 5,
      tokens: [{ name: 'a', token: 'aaaaaaaaaaaaaaaaaaaa' }, { name: 'b', role: 'reader', token_env: 'B_TOKEN' }],
    }));
    const c = loadConfig(file, {}, { B_TOKEN: 'bbbbbbbbbbbbbbbbbbbb', CHUNKVAULT_API_TOKENS: 'c:reader:cccccccccccccccc:x', CHUNKVAULT_VOLUMES: '/srv/*.img' });
    assert.deepEqual(c.tokens, [
      { name: 'a', role: 'admin', secret: 'aaaaaaaaaaaaaaaaaaaa' },
      { name: 'b', role: 'reader', secret: 'bbbbbbbbbbbbbbbbbbbb' },
      { name: 'c', role: 'reader', secret: 'cccccccccccccccc:x' },
    ]);
    assert.deepEqual({ host: c.host, port: c.port, lease: c.leaseMs, stop: c.shutdownTimeoutMs }, { host: '0.0.0.0', port: 9000, lease: 12_000, stop: 5000 });
    assert.deepEqual(c.volumes, ['/dev/vg0/*', '/srv/*.img']);
    const over = loadConfig(file, { listen: '8123', leaseSeconds: 2, shutdownSeconds: 0 }, { B_TOKEN: 'bbbbbbbbbbbbbbbbbbbb' });
    assert.deepEqual({ host: over.host, port: over.port, lease: over.leaseMs, stop: over.shutdownTimeoutMs }, { host: '127.0.0.1', port: 8123, lease: 2000, stop: 0 });
  });

  it('names what is wrong in a bad configuration', () => {
    const bad = (content: unknown, pattern: RegExp, env: NodeJS.ProcessEnv = {}) => {
      const file = path.join(tmp.dir, 'bad.json');
      writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
      assert.throws(() => loadConfig(file, {}, env), (e: Error) => e instanceof InvalidInputError && pattern.test(e.message));
    };
    bad('{ nope', /cannot read configuration .*bad\.json/);
    bad({ tokenz: [] }, /Unrecognized key.*tokenz/);
    bad({ tokens: [{ name: 'a', token: 'short' }] }, /tokens\.0\.token: tokens must be at least 16 characters/);
    bad({ tokens: [{ name: 'a', token_env: 'MISSING' }] }, /token 'a' has neither token nor a set token_env/);
    bad({ lease_seconds: -1 }, /lease_seconds/);
    bad({ listen: 'host:port' }, /listen address 'host:port' is not \[host:\]port/);
    bad({}, /CHUNKVAULT_API_TOKENS: expected name:admin\|reader:token/, { CHUNKVAULT_API_TOKENS: 'x:root:0123456789abcdef' });
    assert.throws(() => loadConfig(path.join(tmp.dir, 'absent.json')), /cannot read configuration .*absent\.json/);
  });
});

describe('bearer tokens', () => {
  const auth = new Authenticator([{ name: 'ops', role: 'admin', secret: 'opsopsopsopsopsops' }, { name: 'ro', role: 'reader', secret: 'rororororororororo' }]);
  it('identifies the caller by its token, and nobody without one', () => {
    assert.deepEqual(auth.identify('Bearer opsopsopsopsopsops'), { name: 'ops', role: 'admin' });
    assert.deepEqual(auth.identify('bearer rororororororororo'), { name: 'ro', role: 'reader' });
    for (const h of [undefined, '', 'Bearer', 'Bearer opsopsopsopsopsop', 'Bearer opsopsopsopsopsopsX', 'Basic opsopsopsopsopsops', 'opsopsopsopsopsops']) {
      assert.equal(auth.identify(h), undefined, String(h));
    }
    assert.equal(new Authenticator([]).identify('Bearer '), undefined);
  });
});

describe('volume allow-list', () => {
  const root = path.join(tmp.dir, 'allow');
  mkdirSync(path.join(root, 'ok', 'deep'), { recursive: true });
  writeFileSync(path.join(root, 'secret.img'), 'x');
  symlinkSync(path.join(root, 'secret.img'), path.join(root, 'ok', 'escape.img'));
  writeFileSync(path.join(root, 'ok', 'a.img'), 'x');
  const list = new AllowList([`${root}/ok/*.img`, `${root}/ok/deep/**`]);

  it('accepts normalised paths that match, existing or not', () => {
    assert.equal(list.check('volume', `${root}/ok/a.img`), `${root}/ok/a.img`);
    assert.equal(list.check('target', `${root}/ok/new.img`), `${root}/ok/new.img`);
    assert.equal(list.check('target', `${root}/ok/deep/x/y.raw`), `${root}/ok/deep/x/y.raw`);
  });

  it('refuses other paths, relative or unnormalised ones, and links that lead outside', () => {
    for (const [p, why] of [
      [`${root}/secret.img`, /not in the service's allowed volumes/],
      [`${root}/ok/a.raw`, /not in the service's allowed volumes/],
      [`${root}/ok/../secret.img`, /absolute, normalised/],
      ['ok/a.img', /absolute, normalised/],
      [`${root}/ok//a.img`, /absolute, normalised/],
      [`${root}/ok/escape.img`, /resolves to .*secret\.img/],
    ] as const) {
      assert.throws(() => list.check('volume', p), (e: Error) => e instanceof InvalidInputError && why.test(e.message), p);
    }
    assert.throws(() => new AllowList([]).check('volume', `${root}/ok/a.img`), /not in the service's allowed volumes/);
    assert.throws(() => new AllowList(['relative/*']), /not an absolute path/);
  });
});
