/** The chunkvault command as a user runs it: JSON results, clear one-line errors, exit codes. */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it, type TestContext } from 'node:test';
import { scratch } from '../support/cinder-fixtures.js';
import { mixedVolume, pseudoRandom } from '../support/engine-helpers.js';
import { hasOpen, waitFor } from '../support/wait.js';

/** Every key, at any depth, that is not snake_case. */
function camelCaseKeys(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(camelCaseKeys);
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([k, v]) => [...(/[A-Z]/.test(k) ? [k] : []), ...camelCaseKeys(v)]);
}

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

describe('chunkvault CLI', () => {
  const tmp = scratch('cli');
  after(() => tmp.cleanup());
  const env = {
    ...process.env, CHUNKVAULT_REPO: path.join(tmp.dir, 'repo'), CHUNKVAULT_CATALOG: path.join(tmp.dir, 'catalog.db'),
    CHUNKVAULT_API_TOKENS: '', CHUNKVAULT_VOLUMES: '',
  };
  const cv = (...args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { env, encoding: 'utf8' });
  const json = (...args: string[]) => {
    const r = cv(...args, '--json');
    assert.equal(r.status, 0, r.stderr);
    const value = JSON.parse(r.stdout);
    assert.deepEqual(camelCaseKeys(value), [], `${args[0]} --json names fields in snake_case`);
    return value;
  };
  const file = (name: string, data: Buffer) => {
    const p = path.join(tmp.dir, name);
    writeFileSync(p, data);
    return p;
  };
  /** The command with a terminal for stdin, stdout and stderr (`script` gives it one); its output is stdout. */
  const onTerminal = (...args: string[]) =>
    spawnSync('script', ['-qec', [process.execPath, MAIN, ...args].map((a) => `'${a}'`).join(' '), '/dev/null'], { env, encoding: 'utf8', cwd: tmp.dir });
  /** Until `child` has the catalog open (Node has started, its command is under way), or has ended. */
  const underWay = (child: ChildProcess) => waitFor('the command to open its catalog', () =>
    child.exitCode !== null || child.signalCode !== null || hasOpen(child.pid!, env.CHUNKVAULT_CATALOG));
  /** A real filesystem of `size` (a tmpfs, unmounted after the test; the suite runs as root, as it installs its servers). */
  const smallFilesystem = (t: TestContext, name: string, size: string) => {
    const dir = path.join(tmp.dir, name);
    mkdirSync(dir);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' });
    assert.equal(mounted.status, 0, `mounting a ${size} tmpfs for this test needs root: ${mounted.stderr}`);
    t.after(() => spawnSync('umount', [dir]));
    return dir;
  };
  const failsCleanly = (r: ReturnType<typeof cv>, code: number, pattern: RegExp) => {
    assert.equal(r.status, code, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^chunkvault: error: .+\n$/);
    assert.match(r.stderr, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  };

  const v1 = mixedVolume(900 * 1024);
  const v2 = Buffer.from(v1);
  pseudoRandom(50_000, 5).copy(v2, 400_000);
  const vol = file('disk.img', v1);
  let fullId = '';
  let incrId = '';
  let volumeId = '';

  it('backs up, then incrementally, the same volume (stable default volume id)', () => {
    const full = json('backup', vol, '--chunk-size', '128K', '--name', 'first');
    writeFileSync(vol, v2);
    const incr = json('backup', vol, '--incremental', '--chunk-size', '128K');
    assert.equal(full.kind, 'full');
    assert.equal(incr.kind, 'incremental');
    assert.equal(incr.volume_id, full.volume_id);
    assert.equal(incr.parent_id, full.id);
    assert.equal(incr.bytes, v2.length);
    fullId = full.id;
    incrId = incr.id;
    volumeId = full.volume_id;
  });

  it('lists and shows backups', () => {
    const list = json('list');
    assert.deepEqual(list.map((r: { id: string }) => r.id), [fullId, incrId]);
    assert.equal(list[0].display_name, 'first');
    assert.equal(list[0].num_dependent_backups, 1);
    const show = json('show', incrId);
    assert.deepEqual(show.chain, [fullId, incrId]);
    assert.equal(show.objects.length, show.record.object_count);
    const table = cv('list');
    assert.match(table.stdout, /^ID\s+VOLUME\s+PARENT\s+KIND\s+SIZE\s+OBJECTS\s+CREATED\s+STATUS/);
    assert.match(table.stdout, new RegExp(`${incrId}.*incremental.*available`));
  });

  it('restores and verifies', () => {
    const out = path.join(tmp.dir, 'out.img');
    const r = json('restore', incrId, out);
    assert.deepEqual(r.chain, [fullId, incrId]);
    assert.ok(readFileSync(out).equals(v2));
    assert.equal(json('verify', fullId).verified, true);
    failsCleanly(cv('restore', incrId, out), 2, /out\.img exists \(use --to-existing to write into it, or --force to replace it\)/);
    assert.equal(cv('restore', incrId, out, '--force', '--quiet').stdout, '');
  });

  it('restores to standard output (messages on stderr) and into a named pipe', async () => {
    const piped = spawnSync(process.execPath, [MAIN, 'restore', incrId, '-', '--json'], { env, maxBuffer: 64 << 20 });
    assert.equal(piped.status, 0, piped.stderr.toString());
    assert.ok(piped.stdout.equals(v2), 'stdout carries the volume and nothing else');
    assert.deepEqual(JSON.parse(piped.stderr.toString()).chain, [fullId, incrId]);
    const fifo = path.join(tmp.dir, 'pipe');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const child = spawn(process.execPath, [MAIN, 'restore', fullId, fifo, '--quiet'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const [data, code] = await Promise.all([readFile(fifo), new Promise((r) => child.on('exit', r))]);
    assert.equal(code, 0, stderr);
    assert.ok(data.equals(v1), 'the pipe carried the full backup');
  });

  it('an explicit parent names the volume: a copy of the image elsewhere continues its chain', () => {
    const r = json('backup', file('copy-of-disk.img', v2), '--parent', incrId, '--chunk-size', '128K');
    assert.equal(r.volume_id, volumeId);
    assert.equal(r.parent_id, incrId);
    assert.equal(r.objects, 0, 'nothing changed');
    assert.equal(json('delete', r.id).id, r.id);
  });

  it('refuses bad input with one clear line and a non-zero exit', () => {
    failsCleanly(cv('backup', path.join(tmp.dir, 'missing.img')), 2, /cannot open source .*missing\.img: no such file or device/);
    failsCleanly(cv('backup', tmp.dir), 2, /is a directory, not a volume/);
    failsCleanly(cv('list', '--catalog', path.join(tmp.dir, 'no-such-dir', 'c.db')), 2, /cannot open catalog .*no-such-dir\/c\.db: directory .*no-such-dir does not exist/);
    assert.ok(!readdirSync(tmp.dir).includes('no-such-dir'), 'a mistyped catalog path creates nothing');
    failsCleanly(cv('list', '--bogus'), 2, /^chunkvault: error: unknown option '--bogus' \(see chunkvault --help\)\n$/);
    failsCleanly(cv('backup'), 2, /missing required argument 'source'/);
    const group = cv('--json', 'catalog');
    assert.equal(group.status, 2);
    assert.match(JSON.parse(group.stdout).error.message, /a sub-command is needed/);
    const usage = cv('--json', 'list', '--bogus');
    assert.equal(usage.status, 2);
    assert.equal(JSON.parse(usage.stdout).error.kind, 'InvalidInputError');
    failsCleanly(cv('backup', path.join(tmp.dir, 'no\nsuch.img')), 2, /cannot open source .*no\\x0asuch\.img: no such file/);
    const records = json('list', '--all').length;
    failsCleanly(cv('backup', '/dev/zero'), 2, /source \/dev\/zero is a character device .*, not a volume/);
    failsCleanly(cv('backup', file('empty.img', Buffer.alloc(0))), 2, /source .*empty\.img is empty: there is nothing to back up/);
    assert.equal(json('list', '--all').length, records, 'refused sources leave no record behind');
    const stdinTty = onTerminal('backup', '-');
    assert.equal(stdinTty.status, 2, stdinTty.stdout);
    assert.match(stdinTty.stdout, /chunkvault: error: stdin is a terminal: pipe the volume into it/);
    failsCleanly(cv('restore', '00000000-0000-4000-8000-000000000000', path.join(tmp.dir, 'x.img')), 4, /backup 00000000-0000-4000-8000-000000000000 is not in the catalog/);
    failsCleanly(cv('backup', vol, '--chunk-size', 'lots'), 2, /--chunk-size: invalid size 'lots'/);
    failsCleanly(cv('backup', vol, '--chunk-size', '100000'), 2, /chunk size 100000 is not a multiple of the sha block size 32768/);
    failsCleanly(cv('backup', vol, '--chunk-size', '2G'), 2, /chunk size 2147483648 is too large: at most 2147483647 bytes/);
    failsCleanly(cv('backup', vol, '--volume-id', 'v'.repeat(65)), 2, /volume id 'v{65}' is not valid: use up to 64 letters/);
    failsCleanly(cv('backup', vol, '--compression', 'lz4'), 2, /--compression: 'lz4' is not one of none, off, no, zlib, gzip, bz2, bzip2, zstd/);
    assert.equal(json('list', '--all').length, records, 'nor do refused options');
    // With --json, a failure is also one object on stdout.
    const missing = cv('--json', 'restore', 'nope', path.join(tmp.dir, 'x.img'));
    assert.equal(missing.status, 4);
    assert.deepEqual(JSON.parse(missing.stdout), { error: { code: 4, kind: 'NotFoundError', message: 'backup nope is not in the catalog' } });
    failsCleanly(cv('delete', fullId), 5, new RegExp(`has 1 dependent incremental backup: ${incrId} \\(available\\); delete it first`));
    failsCleanly(cv('restore', fullId, '-', '--to-existing'), 2, /--to-existing and --force name a file or device/);
    const onTty = onTerminal('restore', fullId, '-');
    assert.equal(onTty.status, 2, onTty.stdout);
    assert.match(onTty.stdout, /chunkvault: error: standard output is a terminal: redirect it, or name a file or block device/);
    assert.ok(!readdirSync(tmp.dir).includes('-'), 'no file named - was written');
    failsCleanly(cv('backup', vol, '--repo', 'ftp://x'), 2, /unsupported repository address/);
    failsCleanly(cv('backup', vol, '--threads', '0'), 2, /--threads: expected a whole number from 1 to 256, got '0'/);
    failsCleanly(cv('restore', fullId, path.join(tmp.dir, 'y.img'), '--threads', 'many'), 2, /--threads: expected a whole number from 1 to 256, got 'many'/);
    failsCleanly(cv('backup', vol, '--volume-id', 'a/b'), 2, /volume id 'a\/b' is not valid/);
    failsCleanly(cv('backup', vol, '--backup-id', '../x'), 2, /backup id '\.\.\/x' is not valid/);
    failsCleanly(cv('backup', vol, '--volume-id', 'another', '--parent', fullId), 2, /parent backup .* is a backup of volume .*, not another/);
    failsCleanly(cv('backup', '-', '--incremental'), 2, /an incremental backup of stdin needs --volume-id \(or --parent\)/);
    failsCleanly(cv('delete', fullId, '--wait', 'soon'), 2, /--wait: expected a number of seconds, got 'soon'/);
    failsCleanly(cv('serve', '--workers', '-1'), 2, /--workers: expected a whole number from 0 to 64, got '-1'/);
    failsCleanly(cv('backup', vol, '--repo', 's3://bkt?endpoint=http://127.0.0.1:1&path_style=maybe'), 2, /path_style must be true or false, got 'maybe'/);
    const leaky = cv('backup', vol, '--repo', 's3://bkt?endpoint=http://user:hush@127.0.0.1:1');
    failsCleanly(leaky, 2, /endpoint: credentials do not belong in the repository address; use the environment/);
    assert.doesNotMatch(leaky.stderr, /hush/);
    failsCleanly(cv('backup', vol, '--repo', 'swift://c?auth=http://user:hush@127.0.0.1:1/auth/v1.0'), 2, /auth: credentials do not belong/);
    failsCleanly(cv('backup', vol, '--repo', 's3://ab?endpoint=http://127.0.0.1:1'), 2, /'ab' is not a valid S3 bucket name/);
    failsCleanly(cv('backup', vol, '--container', 'c'.repeat(256)), 2, /has a name part longer than 255 bytes/);
    failsCleanly(cv('backup', vol, '--repo', 's3://bkt?endpoint=127.0.0.1:8080'), 2, /endpoint '127\.0\.0\.1:8080' is not a URL/);
    failsCleanly(cv('backup', vol, '--repo', 's3://bkt?endpoint=ftp://127.0.0.1:1'), 2, /endpoint 'ftp:\/\/127\.0\.0\.1:1' must be an http:\/\/ or https:\/\/ URL/);
    failsCleanly(cv('backup', vol, '--repo', 's3://bkt?endpoint=http://127.0.0.1:1&region='), 2, /region must not be empty/);
    failsCleanly(cv('backup', vol, '--repo', 'swift://c?auth=http://127.0.0.1:1/auth/v1.0&page_size=20000'), 2, /page_size must be at most 10000 for Swift/);
    // No S3 credentials anywhere: said so, as bad input.
    const bare = { ...env, HOME: tmp.dir, AWS_EC2_METADATA_DISABLED: 'true' };
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_PROFILE', 'AWS_SESSION_TOKEN']) delete (bare as Record<string, unknown>)[k];
    failsCleanly(spawnSync(process.execPath, [MAIN, 'backup', vol, '--repo', 's3://bkt?endpoint=http://127.0.0.1:1'], { env: bare, encoding: 'utf8' }), 2,
      /s3: no credentials \(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    failsCleanly(cv('serve', '--listen', '0'), 2, /no API tokens configured/);
    failsCleanly(cv('list', '--catalog', 'postgres://u:secret@127.0.0.1:1/db'), 6, /cannot open catalog postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db: .*ECONNREFUSED/);
    assert.doesNotMatch(cv('list', '--catalog', 'postgres://u:secret@127.0.0.1:1/db').stderr, /secret/);
    assert.equal(JSON.parse(cv('list', '--json', '--catalog', 'postgres://u:secret@127.0.0.1:1/db').stdout).error.kind, 'CatalogError');
    failsCleanly(cv('worker', '--config', path.join(tmp.dir, 'none.json')), 2, /cannot read configuration .*none\.json/);
    failsCleanly(cv('worker', '--volume', 'relative/*'), 2, /volume pattern 'relative\/\*' is not an absolute path/);
    const bad = cv('backup', vol, '--compression', 'lzma');
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /lzma/);
    assert.doesNotMatch(bad.stderr, /\n\s+at /);
  });

  it('serve names an address it cannot listen on', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const { port } = busy.address() as net.AddressInfo;
    try {
      const r = spawnSync(process.execPath, [MAIN, 'serve', '--listen', `127.0.0.1:${port}`, '--workers', '0'], {
        env: { ...env, CHUNKVAULT_API_TOKENS: 'ops:admin:0123456789abcdef0123' }, encoding: 'utf8',
      });
      failsCleanly(r, 2, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: address already in use`));
    } finally {
      busy.close();
    }
  });

  it('exports a record in Cinder\'s encoding and imports it into a fresh catalog', () => {
    const exported = json('export-record', incrId);
    assert.equal(exported.backup_service, 'cinder.backup.drivers.posix.PosixBackupDriver');
    const decoded = JSON.parse(Buffer.from(exported.backup_url, 'base64').toString('utf8'));
    for (const k of ['id', 'display_name', 'display_description', 'container', 'size', 'service_metadata', 'object_count']) assert.ok(k in decoded, k);
    assert.match(decoded.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const other = path.join(tmp.dir, 'other.db');
    const parent = json('export-record', fullId);
    const imp = (url: string) => spawnSync(process.execPath, [MAIN, 'import-record', url, '--catalog', other, '--json'], { env, encoding: 'utf8' });
    assert.equal(imp(parent.backup_url).status, 0);
    const r = imp(exported.backup_url);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).parent_id, fullId);
    assert.equal(JSON.parse(r.stdout).volume_bytes, v2.length, "an incremental's exact length, from its parent's");
    const restored = spawnSync(process.execPath, [MAIN, 'verify', incrId, '--catalog', other], { env, encoding: 'utf8' });
    assert.equal(restored.status, 0, restored.stderr);
    const again = imp(exported.backup_url);
    assert.equal(again.status, 5);
    assert.match(again.stderr, /^chunkvault: error: backup .* is already in the catalog\n$/);
    assert.equal(JSON.parse(again.stdout).error.kind, 'ConflictError');
  });

  it('rebuilds a lost catalog from the repository', () => {
    const lost = path.join(tmp.dir, 'rebuilt.db');
    const r = spawnSync(process.execPath, [MAIN, 'catalog', 'rebuild', '--catalog', lost, '--json'], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).added.sort(), [fullId, incrId].sort());
    const list = JSON.parse(spawnSync(process.execPath, [MAIN, 'list', '--catalog', lost, '--json'], { env, encoding: 'utf8' }).stdout);
    assert.equal(list.find((x: { id: string }) => x.id === incrId).parent_id, fullId);
    assert.equal(list.find((x: { id: string }) => x.id === incrId).volume_bytes, v2.length);
    const out = path.join(tmp.dir, 'rebuilt.img');
    assert.equal(spawnSync(process.execPath, [MAIN, 'restore', incrId, out, '--catalog', lost], { env }).status, 0);
    assert.ok(readFileSync(out).equals(v2));
  });

  it('takes compression names in any case, as Cinder does', () => {
    const r = json('backup', file('mixed-case.img', pseudoRandom(100_000, 12)), '--compression', 'Zstd', '--volume-id', 'mixed-case');
    assert.equal(json('show', r.id).record.compression, 'zstd');
    assert.equal(json('delete', r.id).id, r.id);
  });

  it('a reader that stops early ends the output quietly', async () => {
    const child = spawn(process.execPath, [MAIN, 'show', fullId], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.once('data', () => child.stdout.destroy()); // as `| head -1` does
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });

  it('SIGINT at any moment of a restore or verify is a cancel: exit 130, one line, no file left', async () => {
    const big = file('interrupted.img', pseudoRandom(64 << 20, 13));
    const { id } = json('backup', big, '--chunk-size', '1M', '--volume-id', 'interrupted');
    const outcomes: string[] = [];
    // Moments from the command's start (its catalog open: a loaded machine may take seconds to
    // get there) to past its end.
    for (const [i, delay] of [0, 25, 50, 100, 200, 400, 600, 800, 1200, 1600].entries()) {
      const target = path.join(tmp.dir, `interrupted-${i}.img`);
      const args = i % 2 ? ['verify', id] : ['restore', id, target];
      const child = spawn(process.execPath, [MAIN, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<[number | null, string | null]>((r) => child.on('close', (c, sig) => r([c, sig])));
      await underWay(child);
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGINT');
      const [code, signal] = await exited;
      outcomes.push(`${args[0]} ${delay} ms after it opened its catalog: ${code ?? signal} ${stderr.trim()}`);
      // Finished before the signal (0), cancelled (130) and said so, or stopped by the signal
      // before Node had started the command (a slow start): never an "unexpected failure".
      const beforeStart = signal === 'SIGINT' && stderr === '';
      assert.ok(code === 0 || beforeStart || (code === 130 && stderr === 'chunkvault: error: cancelled by SIGINT\n'), outcomes.at(-1));
      // Never a partial file: a cancel leaves nothing; a process killed by the signal while it was
      // exiting (after a finished restore) may leave only the whole, verified volume.
      const left = readdirSync(tmp.dir).filter((f) => f.includes(`interrupted-${i}.img`));
      if (code === 130) assert.deepEqual(left, [], outcomes.at(-1));
      if (code !== 0 && left.length) {
        assert.ok(beforeStart && args[0] === 'restore', outcomes.at(-1));
        assert.deepEqual(left, [`interrupted-${i}.img`]);
        assert.ok(readFileSync(target).equals(readFileSync(big)), 'a file left at the target is the whole volume');
      }
    }
    assert.ok(outcomes.some((o) => / 130 /.test(o)), outcomes.join('\n'));
    assert.equal(json('delete', id).id, id);
  });

  it('deletes newest first', () => {
    assert.equal(json('delete', incrId).id, incrId);
    assert.equal(json('delete', fullId).id, fullId);
    assert.deepEqual(json('list'), []);
  });

  it('SIGTERM stops a running backup: non-zero exit, record in error, no objects, even when sent twice', async () => {
    const child = spawn(process.execPath, [MAIN, 'backup', '-', '--volume-id', 'sigterm-vol', '--chunk-size', '64K', '--json'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // The volume's first 2 MiB, taken in (an unread rest would meet a closed pipe); then the pipe
    // stays open: the backup is in flight.
    await new Promise((r) => child.stdin.write(pseudoRandom(2 << 20, 3), r));
    const exited = new Promise((r) => child.on('exit', r));
    await waitFor('the backup to store objects', () => {
      const rec = json('list', '--all').find((x: { volume_id: string }) => x.volume_id === 'sigterm-vol');
      try {
        return rec?.status === 'creating' && readdirSync(path.join(tmp.dir, 'repo', rec.container)).length > 0;
      } catch {
        return false; // no object yet
      }
    });
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 5));
    // A second signal (an impatient user) lets the clean-up finish; it says how to quit at once.
    if (child.kill('SIGTERM')) await new Promise((r) => setTimeout(r, 5));
    const code = await exited;
    assert.equal(code, 130);
    assert.match(stderr, /cancelled by SIGTERM/);
    // (Said only while the clean-up runs: once it is done, the second signal is told the command has ended.)
    // A process that ended before the second signal arrived said only why it stopped (naming the
    // backup when the cancel reached it as it wrote).
    assert.match(stderr, /still cleaning up after the cancel; SIGTERM once more quits at once|the command has ended and is closing; SIGTERM once more quits at once|^chunkvault: error: (backup [0-9a-f-]{36}: )?cancelled by SIGTERM\n$/);
    const rec = json('list', '--all').find((x: { volume_id: string }) => x.volume_id === 'sigterm-vol');
    assert.equal(rec.status, 'error');
    assert.match(rec.fail_reason, /SIGTERM/);
    assert.deepEqual(readdirSync(path.join(tmp.dir, 'repo', rec.container)), []);
  });

  it('a restore onto a full filesystem names the target and the offset, exits 7 and leaves no file behind', (t) => {
    // A real full filesystem: a 1 MiB tmpfs.
    const full = smallFilesystem(t, 'full', '1m');
    const id = json('backup', file('random.img', pseudoRandom(3 << 20, 9)), '--volume-id', 'enospc').id;
    failsCleanly(cv('restore', id, path.join(full, 'out.img')), 7, /full\/out\.img: cannot write at offset \d+: ENOSPC: no space left on device/);
    assert.deepEqual(readdirSync(full), [], 'the temporary file is gone');
    writeFileSync(path.join(full, 'in-place.img'), 'old');
    failsCleanly(cv('restore', id, path.join(full, 'in-place.img'), '--to-existing'), 7, /in-place\.img: cannot write at offset \d+: ENOSPC/);
    assert.equal(json('delete', id).id, id);
  });
  it('a full temporary directory fails a backup of many hashes in one line naming it (exit 7), and nothing of it stays', (t) => {
    const tmpfs = smallFilesystem(t, 'tmpfull', '1m');
    // 200 MiB at 512-byte blocks: 409600 hashes, 12.5 MiB, past what is held in memory.
    const vol = path.join(tmp.dir, 'many-hashes.img');
    writeFileSync(vol, '');
    truncateSync(vol, 200 << 20);
    const r = spawnSync(process.execPath, [MAIN, 'backup', vol, '--volume-id', 'tmpfull', '--sha-block-size', '512'],
      { env: { ...env, TMPDIR: tmpfs }, encoding: 'utf8' });
    failsCleanly(r, 7, new RegExp(`cannot keep the backup's hashes in a temporary file in ${tmpfs} \\(set TMPDIR for another place\\): ENOSPC`));
    const [rec] = json('list', '--all', '--volume', 'tmpfull') as { status: string; container: string }[];
    assert.equal(rec!.status, 'error');
    assert.deepEqual(readdirSync(path.join(tmp.dir, 'repo', rec!.container)), [], 'no object of it stays');
    assert.deepEqual(readdirSync(tmpfs), [], 'nor a temporary file');
  });

  it('a repository that fills up fails the backup in one line (exit 6), and nothing of it stays', (t) => {
    const small = smallFilesystem(t, 'small', '24m');
    const vol = file('fills.img', pseudoRandom(80 * 1024 * 1024, 31));
    for (let i = 0; i < 3; i++) {
      const r = cv('backup', vol, '--volume-id', 'fills', '--repo', path.join(small, 'repo'), '--threads', '2');
      failsCleanly(r, 6, /no space left on device/);
      const files = spawnSync('find', [path.join(small, 'repo'), '-type', 'f'], { encoding: 'utf8' }).stdout;
      assert.equal(files, '', 'no object of the failed backup is left');
    }
    const recs = json('list', '--all', '--volume', 'fills', '--repo', path.join(small, 'repo')) as { status: string }[];
    assert.deepEqual(recs.map((r) => r.status), ['error', 'error', 'error']);
  });
});
