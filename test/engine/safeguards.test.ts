/** What protects data around a restore or a delete: status while restoring, names that appear, sizes that change. */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync, appendFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../../src/backends/backend.js';
import { after, before, describe, it } from 'node:test';
import type { BackupPatch, BackupStatus, Catalog, NewBackupRecord } from '../../src/catalog/catalog.js';
import { locate } from '../../src/engine/repository.js';
import { exportRecord, rebuildCatalog } from '../../src/engine/records.js';
import { deleteBackup } from '../../src/engine/delete.js';
import { restoreBackup } from '../../src/engine/restore.js';
import { openSource, type VolumeSource } from '../../src/engine/source.js';
import { runBackup } from '../../src/engine/backup.js';
import { BackendError, ConflictError, IntegrityError, InvalidInputError, VolumeIOError } from '../../src/errors.js';
import { makeRepo, mixedVolume, pseudoRandom, SMALL, type Repo } from '../support/engine-helpers.js';
import { waitFor } from '../support/wait.js';

/** host:pid of a process that has ended. */
function deadWriter(): string {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return `${hostname()}:${r.stdout}`;
}

describe('safeguards around restore and delete', () => {
  let repo: Repo;
  before(() => {
    repo = makeRepo('safeguards');
  });
  after(() => repo.close());

  it('a backup is `restoring` while it is written somewhere; a delete meanwhile is refused, and allowed once its restorer is gone', async () => {
    const v = mixedVolume(600 * 1024);
    const { id } = await repo.backup(repo.file('restoring.img', v), { volumeId: 'restoring' });
    const seen: string[] = [];
    const refusals: unknown[] = [];
    await restoreBackup({
      backend: repo.backend, catalog: repo.catalog, backupId: id, target: path.join(repo.dir, 'restoring-out.img'), threads: 1,
      progressEveryObjects: 1,
      onProgress: () => {
        void repo.catalog.get(id).then((r) => seen.push(`${r!.status} ${r!.worker}`));
        void deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id }).catch((err: unknown) => refusals.push(err));
      },
    });
    assert.ok(readFileSync(path.join(repo.dir, 'restoring-out.img')).equals(v));
    assert.ok(seen.includes(`restoring ${hostname()}:${process.pid}`), seen.join(', '));
    assert.ok(refusals.length > 0 && refusals.every((e) => e instanceof ConflictError && /is being restored/.test((e as Error).message)));
    const rec = (await repo.catalog.get(id))!;
    assert.equal(rec.status, 'available', 'the restore gave the status back');
    assert.equal(rec.worker, null);
    // Verifying writes nothing, and leaves the status alone.
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, threads: 1 });
    assert.equal((await repo.catalog.get(id))!.status, 'available');

    // A restorer that died leaves `restoring` behind: a delete takes the backup back and goes on.
    await repo.catalog.update(id, { status: 'restoring', worker: deadWriter() });
    await deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id });
    assert.equal((await repo.catalog.get(id))!.status, 'deleted');
  });

  it('two restores of one backup at once: it stays `restoring` until the last ends, and a delete waits for both', async () => {
    const v = mixedVolume(600 * 1024, 18);
    const { id } = await repo.backup(repo.file('two-restorers.img', v), { volumeId: 'two-restorers' });
    const fifo = path.join(repo.dir, 'two-restorers.pipe');
    execFileSync('mkfifo', [fifo]);
    let other: ChildProcess | undefined;
    const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
    // While this process restores, another one starts restoring the same backup into a pipe
    // nobody reads yet: it is still running when this restore ends.
    const joining: Backend = Object.create(repo.backend, {
      get: {
        value: async (c: string, n: string, o?: object) => {
          if (!other) {
            other = spawn(process.execPath, [main, 'restore', id, fifo, '--repo', path.join(repo.dir, 'repo'), '--catalog', path.join(repo.dir, 'catalog.db')],
              { stdio: ['ignore', 'ignore', 'pipe'] });
            const them = `${hostname()}:${other.pid}`;
            while (!(await repo.catalog.get(id))!.worker?.split(' ').includes(them)) await sleep(20);
          }
          return repo.backend.get(c, n, o);
        },
      },
    });
    await restoreBackup({ backend: joining, catalog: repo.catalog, backupId: id, target: path.join(repo.dir, 'two-restorers-out.img'), threads: 1 });
    const them = `${hostname()}:${other!.pid}`;
    const during = (await repo.catalog.get(id))!;
    assert.equal(during.status, 'restoring', 'the other restore still runs');
    assert.equal(during.worker, them);
    await assert.rejects(deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id }),
      (err: Error) => err instanceof ConflictError && err.message.includes(`is being restored (by ${them})`));
    const exited = new Promise<number | null>((r) => other!.on('close', r));
    assert.ok(readFileSync(fifo).equals(v), 'the other restore was not disturbed');
    assert.equal(await exited, 0);
    const after = (await repo.catalog.get(id))!;
    assert.equal(after.status, 'available', 'the last restorer gave it back');
    assert.equal(after.worker, null);
  });

  it('a restore into a new file leaves alone a file that appeared at its name meanwhile', async () => {
    const v = mixedVolume(600 * 1024, 3);
    const { id } = await repo.backup(repo.file('appear.img', v), { volumeId: 'appear' });
    const target = path.join(repo.dir, 'appeared.img');
    let written = false;
    await assert.rejects(
      restoreBackup({
        backend: repo.backend, catalog: repo.catalog, backupId: id, target, threads: 1, progressEveryObjects: 1,
        onProgress: () => {
          if (!written) writeFileSync(target, 'a file of the user\n');
          written = true;
        },
      }),
      (err: Error) => err instanceof ConflictError && err.message.includes(`${target} appeared while the restore ran; it was left as it is`),
    );
    assert.equal(readFileSync(target, 'utf8'), 'a file of the user\n');
    assert.deepEqual(readdirSync(repo.dir).filter((f) => f.includes('chunkvault-tmp')), [], 'no temporary file left');
    assert.equal((await repo.catalog.get(id))!.status, 'available');
    // --force replaces it.
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target, force: true, threads: 1 });
    assert.ok(readFileSync(target).equals(v));
  });

  it('in place, a larger file keeps the bytes past the volume; a smaller one grows to it', async () => {
    const v = mixedVolume(300 * 1024, 4);
    const { id } = await repo.backup(repo.file('inplace.img', v), { volumeId: 'inplace' });
    const old = pseudoRandom(1024 * 1024, 5);
    const larger = repo.file('larger.img', old);
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target: larger, toExisting: true, threads: 1 });
    const after = readFileSync(larger);
    assert.equal(after.length, old.length);
    assert.ok(after.subarray(0, v.length).equals(v));
    assert.ok(after.subarray(v.length).equals(old.subarray(v.length)), 'bytes past the volume are untouched');
    const smaller = repo.file('smaller.img', pseudoRandom(1000, 6));
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target: smaller, toExisting: true, threads: 1 });
    assert.ok(readFileSync(smaller).equals(v));
  });

  it('one restore at a time into a file in place: a second is refused, a lock its holder left when it died is taken over', async () => {
    const v = mixedVolume(600 * 1024, 14);
    const { id } = await repo.backup(repo.file('locked.img', v), { volumeId: 'locked' });
    const target = repo.file('locked-target.img', pseudoRandom(v.length, 15));
    const lock = path.join(repo.dir, '.locked-target.img.chunkvault-lock');
    // The first restore holds its lock while its data object reads wait: the second comes then, however slow the machine.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const held: Backend = Object.create(repo.backend, {
      get: { value: async (c: string, n: string, o?: object) => (/-\d{5}$/.test(n) && (await released), repo.backend.get(c, n, o)) },
    });
    const first = restoreBackup({ backend: held, catalog: repo.catalog, backupId: id, target, toExisting: true, threads: 1 });
    await waitFor('the first restore to hold its lock', () => existsSync(lock));
    const refusal = await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target, toExisting: true, threads: 1 })
      .then(() => 'restored as well', (err: Error) => err);
    release();
    await first;
    assert.ok(refusal instanceof ConflictError, String(refusal));
    assert.equal(refusal.message, `${target} is being restored into by ${hostname()}:${process.pid} (its lock is ${lock})`);
    assert.ok(readFileSync(target).equals(v));
    assert.deepEqual(readdirSync(repo.dir).filter((f) => f.endsWith('.chunkvault-lock')), [], 'the lock goes with the restore');
    writeFileSync(lock, deadWriter());
    writeFileSync(target, pseudoRandom(v.length, 16));
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, target, toExisting: true, threads: 1 });
    assert.ok(readFileSync(target).equals(v));
    assert.deepEqual(readdirSync(repo.dir).filter((f) => f.endsWith('.chunkvault-lock')), []);
  });

  it('a file that shrinks or grows while it is backed up fails the backup; nothing of it stays', async () => {
    for (const [label, change] of [['shrinks', (f: string) => truncateSync(f, 100_000)], ['grows', (f: string) => appendFileSync(f, pseudoRandom(70_000, 8))]] as const) {
      const file = repo.file(`${label}.img`, mixedVolume(500 * 1024, 7));
      const source = await openSource(file);
      change(file); // after the size was taken at open
      try {
        await assert.rejects(
          runBackup({ backend: repo.backend, catalog: repo.catalog, source, volumeId: label, ...SMALL, backupId: `size-${label}` }),
          (err: Error) => err instanceof VolumeIOError && err.message.startsWith(`${file}: changed size while it was backed up (512000 bytes when opened,`),
        );
      } finally {
        await source.close();
      }
      const rec = (await repo.catalog.get(`size-${label}`))!;
      assert.equal(rec.status, 'error');
      assert.deepEqual(readdirSync(path.join(repo.dir, 'repo', rec.container!)), []);
    }
  });

  it('refuses chunk sizes past 2 GiB before recording anything; a small volume with huge chunks needs buffers only its size', async () => {
    const file = repo.file('chunky.img', mixedVolume(200 * 1024 + 100, 9));
    await assert.rejects(repo.backup(file, { chunkSize: 2 ** 31, backupId: 'too-large' }),
      (err: Error) => err instanceof InvalidInputError && /chunk size 2147483648 is too large: at most 2147483647 bytes/.test(err.message));
    assert.equal(await repo.catalog.get('too-large'), undefined);
    await assert.rejects(repo.backup(file, { chunkSize: 100_000, shaBlockSize: 32768 }),
      /chunk size 100000 is not a multiple of the sha block size 32768/);

    // Cinder's posix default chunk size for a 200 KiB volume: buffers of the volume's size, not 1.86 GiB.
    const inner = await openSource(file);
    let largest = 0;
    const source: VolumeSource = {
      name: inner.name, size: inner.size, parallelReads: inner.parallelReads,
      read: (b) => inner.read(b), close: () => inner.close(),
      buffer: (n) => ((largest = Math.max(largest, n)), inner.buffer(n)),
    };
    try {
      const r = await runBackup({ backend: repo.backend, catalog: repo.catalog, source, volumeId: 'chunky', chunkSize: 1999994880, threads: 1 });
      assert.equal(r.bytes, 200 * 1024 + 100);
      assert.equal(largest, 204800 + 4096, 'buffers of the volume rounded up to 4 KiB');
      const out = path.join(repo.dir, 'chunky-out.img');
      await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: r.id, target: out, threads: 1 });
      assert.ok(readFileSync(out).equals(readFileSync(file)));
    } finally {
      await source.close();
    }
  });

  it('refuses a sha256file larger than the store takes in one object, before recording anything', async () => {
    const file = repo.file('store-limit.img', mixedVolume(1 << 20, 20));
    const backend = Object.create(repo.backend, { maxObjectBytes: { value: 100_000 } }) as typeof repo.backend;
    await assert.rejects(repo.backup(file, { backend, shaBlockSize: 512, backupId: 'store-limit' }), (err: Error) =>
      err instanceof InvalidInputError && /^sha block size 512 is too small for a volume of 1048576 bytes: its sha256file would list 2048 SHA-256 hashes, more than the (\d+) one backup can list \(a (\d+)-byte sha256file\); use a larger sha block size$/.test(err.message) &&
      Number(/more than the (\d+)/.exec(err.message)![1]) > 1000 && Number(/a (\d+)-byte/.exec(err.message)![1]) <= 100_000);
    assert.equal(await repo.catalog.get('store-limit'), undefined);
    const r = await repo.backup(file, { backend, shaBlockSize: 4096, volumeId: 'store-limit' });
    assert.equal(r.bytes, 1 << 20);
  });

  it('an incremental of a volume grown past what its parent\'s sha block size can list asks for a full backup', async () => {
    const file = repo.file('grown.img', mixedVolume(200 * 1024, 19));
    const backend = Object.create(repo.backend, { maxObjectBytes: { value: 100_000 } }) as typeof repo.backend;
    const parent = await repo.backup(file, { backend, volumeId: 'grown', shaBlockSize: 512 });
    truncateSync(file, 1 << 20);
    const before = (await repo.catalog.list({ volumeId: 'grown', includeDeleted: true })).length;
    await assert.rejects(repo.backup(file, { backend, volumeId: 'grown', incremental: true, shaBlockSize: undefined }), (err: Error) =>
      err instanceof InvalidInputError && new RegExp(`^sha block size 512 \\(that of parent backup ${parent.id}\\) is too small for a volume of ` +
        '1048576 bytes: its sha256file would list 2048 SHA-256 hashes, more than the \\d+ one backup can list \\(a \\d+-byte sha256file\\); ' +
        'the volume has grown past what an incremental of it can list: do a full backup, with a larger sha block size$').test(err.message));
    assert.equal((await repo.catalog.list({ volumeId: 'grown', includeDeleted: true })).length, before, 'nothing recorded');
  });

  it('catalog rebuild repairs what a process of this host left when it died, and nothing else', async () => {
    const file = repo.file('repair.img', mixedVolume(200 * 1024, 12));
    const committed = await repo.backup(file, { volumeId: 'repair' }); // killed after `_metadata`, before the catalog
    const restoring = await repo.backup(file, { volumeId: 'repair-r' }); // killed while restoring
    const running = await repo.backup(file, { volumeId: 'repair-live' }); // still being written by a live process
    const deleting = await repo.backup(file, { volumeId: 'repair-d' }); // killed while deleting it
    const dead = deadWriter();
    await repo.catalog.update(deleting.id, { status: 'deleting', worker: dead });
    await repo.catalog.update(committed.id, { status: 'creating', worker: dead, object_count: 0, volume_bytes: null });
    await repo.catalog.update(restoring.id, { status: 'restoring', worker: dead });
    await repo.catalog.update(running.id, { status: 'creating', worker: `${hostname()}:${process.pid}` });
    // Killed before its commit point: one data object under its prefix, no `_metadata`.
    const partial = (await repo.catalog.get(committed.id))!;
    const prefix = 'volume_repair-p_20260101000000_backup_partial-1';
    await repo.catalog.create({ ...partial, id: 'partial-1', volume_id: 'repair-p', service_metadata: prefix, status: 'creating', worker: dead });
    await repo.backend.put(partial.container!, `${prefix}-00001`, pseudoRandom(1000, 13));

    const r = await rebuildCatalog(repo.backend, repo.catalog, ['']);
    assert.deepEqual(r.repaired.map((x) => x.split(':')[0]).sort(), [committed.id, restoring.id, deleting.id, 'partial-1'].sort(), r.repaired.join('\n'));
    assert.equal((await repo.catalog.get(deleting.id))!.status, 'error');
    assert.match((await repo.catalog.get(deleting.id))!.fail_reason!, /its delete by .* ended before it was done: delete it again/);
    const now = async (id: string) => (await repo.catalog.get(id))!;
    assert.equal((await now(committed.id)).status, 'available');
    assert.equal((await now(committed.id)).volume_bytes, 200 * 1024);
    assert.equal((await now(committed.id)).object_count, committed.objects);
    assert.equal((await now(restoring.id)).status, 'available');
    assert.equal((await now('partial-1')).status, 'error');
    assert.match((await now('partial-1')).fail_reason!, new RegExp(`its writer ${dead} ended before the backup was complete`));
    const left: string[] = [];
    for await (const n of repo.backend.list(partial.container!, prefix)) left.push(n);
    assert.deepEqual(left, [], 'its partial objects are gone');
    assert.equal((await now(running.id)).status, 'creating', 'a live writer is left alone');
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: committed.id, threads: 1 });
  });

  it('an incremental is refused on a chain whose backup lost its _metadata (it could never be restored)', async () => {
    const f = repo.file('broken-chain.img', mixedVolume(200 * 1024, 14));
    const full = await repo.backup(f, { volumeId: 'broken-chain' });
    const incr = await repo.backup(f, { volumeId: 'broken-chain', incremental: true });
    const before = (await repo.catalog.list({ volumeId: 'broken-chain', includeDeleted: true })).length;
    for (const lost of [full, incr]) {
      const saved = await repo.backend.get(lost.container, `${lost.prefix}_metadata`);
      await repo.backend.delete(lost.container, `${lost.prefix}_metadata`);
      await assert.rejects(repo.backup(f, { volumeId: 'broken-chain', incremental: true }), (err: Error) =>
        err instanceof IntegrityError && err.message.includes(`backup ${lost.id} is incomplete: its metadata object ${lost.prefix}_metadata is missing`));
      await repo.backend.put(lost.container, `${lost.prefix}_metadata`, saved);
    }
    assert.equal((await repo.catalog.list({ volumeId: 'broken-chain', includeDeleted: true })).length, before, 'nothing recorded');
    assert.equal((await repo.backup(f, { volumeId: 'broken-chain', incremental: true })).parentId, incr.id);
  });

  it('an incremental is refused on a chain whose backup lost its _sha256file (a restore reads every one)', async () => {
    const f = repo.file('hashless-chain.img', mixedVolume(200 * 1024, 15));
    const full = await repo.backup(f, { volumeId: 'hashless-chain' });
    const incr = await repo.backup(f, { volumeId: 'hashless-chain', incremental: true });
    const records = async () => (await repo.catalog.list({ volumeId: 'hashless-chain', includeDeleted: true })).length;
    const objects = async () => {
      const names: string[] = [];
      for await (const n of repo.backend.list(full.container, '')) names.push(n);
      return names.sort();
    };
    const before = { records: await records(), objects: await objects() };
    for (const lost of [full, incr]) {
      const name = `${lost.prefix}_sha256file`;
      const saved = await repo.backend.get(lost.container, name);
      await repo.backend.delete(lost.container, name);
      await assert.rejects(repo.backup(f, { volumeId: 'hashless-chain', incremental: true }), (err: Error) =>
        err instanceof IntegrityError && err.exitCode === 3 &&
        err.message.includes(`backup ${lost.id} is incomplete: its sha256file ${name} is missing`));
      assert.equal(await records(), before.records, 'nothing recorded');
      assert.deepEqual(await objects(), before.objects.filter((n) => n !== name), 'nothing stored');
      await repo.backend.put(lost.container, name, saved);
    }
    // The ancestors' hash lists are looked up, not read (only the parent's is needed).
    const read: string[] = [];
    const watched: Backend = Object.create(repo.backend, {
      get: { value: (c: string, n: string, o?: object) => (read.push(n), repo.backend.get(c, n, o)) },
      readRange: { value: (c: string, n: string, at: number, l: number, o?: object) => (read.push(n), repo.backend.readRange(c, n, at, l, o)) },
    });
    assert.equal((await repo.backup(f, { volumeId: 'hashless-chain', incremental: true, backend: watched })).parentId, incr.id);
    assert.ok(read.includes(`${incr.prefix}_sha256file`) && !read.includes(`${full.prefix}_sha256file`), read.join(', '));
  });

  it('a delete and an incremental choosing the same parent at once: one of them gives way, the chain stays whole', async () => {
    const f = repo.file('race.img', mixedVolume(200 * 1024, 16));
    // The incremental names the parent just after the delete's first look: the delete gives way.
    const full = await repo.backup(f, { volumeId: 'race' });
    const lateChild: Catalog = Object.create(repo.catalog, {
      update: {
        value: async (id: string, patch: BackupPatch, ifStatus?: BackupStatus[]) => {
          const changed = await repo.catalog.update(id, patch, ifStatus);
          // What an incremental that had chosen it records (see the second half for the rest of its run).
          if (id === full.id && patch.status === 'deleting') {
            const rec = (await repo.catalog.get(full.id))!;
            await repo.catalog.create({ ...rec, id: 'race-child', parent_id: full.id, status: 'creating', service_metadata: null });
          }
          return changed;
        },
      },
    });
    await assert.rejects(deleteBackup({ backend: repo.backend, catalog: lateChild, backupId: full.id }),
      (err: Error) => err instanceof ConflictError && /has 1 dependent incremental/.test(err.message));
    assert.equal((await repo.catalog.get(full.id))!.status, 'available');
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: full.id, threads: 1 });

    // The delete marks the parent just after the incremental chose it: the incremental gives way.
    const parent = await repo.backup(f, { volumeId: 'race2' });
    const lateDelete: Catalog = Object.create(repo.catalog, {
      create: {
        value: async (rec: NewBackupRecord) => {
          const made = await repo.catalog.create(rec);
          await repo.catalog.update(parent.id, { status: 'deleting' }, ['available']);
          return made;
        },
      },
    });
    const id = 'a0000000-0000-4000-8000-00000000race';
    await assert.rejects(repo.backup(f, { volumeId: 'race2', incremental: true, catalog: lateDelete, backupId: id }),
      (err: Error) => err instanceof ConflictError && /was being deleted as this incremental started/.test(err.message));
    const gaveWay = (await repo.catalog.get(id))!;
    assert.equal(gaveWay.status, 'error');
    assert.equal(gaveWay.parent_id, null, 'it never depended on the parent');
    await deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: parent.id });
    assert.equal((await repo.catalog.get(parent.id))!.status, 'deleted');
  });

  it('an incremental whose parent a delete takes away as it reads the chain gives way with a conflict (exit 5), recording nothing', async () => {
    const f = repo.file('race3.img', mixedVolume(200 * 1024, 18));
    const records = async (volumeId: string) => (await repo.catalog.list({ volumeId, includeDeleted: true })).map((r) => r.id);
    const refused = (parentId: string) => (err: Error) => err instanceof ConflictError && err.exitCode === 5 &&
      err.message === `parent backup ${parentId} was being deleted as this incremental started; back up again`;

    // The whole delete runs just after the incremental chose the parent: its sha256file is gone.
    const chosen = await repo.backup(f, { volumeId: 'race3' });
    const deletedOnceChosen: Catalog = Object.create(repo.catalog, {
      list: {
        value: async (...args: Parameters<Catalog['list']>) => {
          const found = await repo.catalog.list(...args);
          await deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: chosen.id });
          return found;
        },
      },
    });
    await assert.rejects(repo.backup(f, { volumeId: 'race3', incremental: true, catalog: deletedOnceChosen }), refused(chosen.id));
    assert.deepEqual(await records('race3'), [chosen.id], 'nothing recorded');
    assert.equal((await repo.catalog.get(chosen.id))!.status, 'deleted');

    // A delete begins just after the parent's sha256file was read: `deleting`, its `_metadata` gone.
    const read = await repo.backup(f, { volumeId: 'race4' });
    const deletingOnceRead: Backend = Object.create(repo.backend, {
      readRange: {
        value: async (c: string, n: string, at: number, l: number, o?: object) => {
          const data = await repo.backend.readRange(c, n, at, l, o);
          if (n === `${read.prefix}_sha256file`) {
            await repo.catalog.update(read.id, { status: 'deleting' }, ['available']);
            await repo.backend.delete(c, `${read.prefix}_metadata`);
          }
          return data;
        },
      },
    });
    await assert.rejects(repo.backup(f, { volumeId: 'race4', incremental: true, backend: deletingOnceRead }), refused(read.id));
    assert.deepEqual(await records('race4'), [read.id], 'nothing recorded');
    await deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: read.id });
    assert.equal((await repo.catalog.get(read.id))!.status, 'deleted');

    // A large parent's hashes are read as the backup reaches them: its sha256file goes meanwhile.
    const big = repo.file('race5.img', mixedVolume(1024 * 1024, 21));
    const large = await repo.backup(big, { volumeId: 'race5', shaBlockSize: 512 });
    let reads = 0;
    const deletingWhileRead: Backend = Object.create(repo.backend, {
      readRange: {
        value: async (c: string, n: string, at: number, l: number, o?: object) => {
          // After its two ends (the shape of the list), before its lines.
          if (n === `${large.prefix}_sha256file` && ++reads === 3) {
            await repo.catalog.update(large.id, { status: 'deleting' }, ['available']);
            await repo.backend.delete(c, n);
          }
          return repo.backend.readRange(c, n, at, l, o);
        },
      },
    });
    const id5 = 'a0000000-0000-4000-8000-0000000race5';
    await assert.rejects(repo.backup(big, { volumeId: 'race5', incremental: true, shaBlockSize: 512, backend: deletingWhileRead, backupId: id5 }), refused(large.id));
    assert.equal(reads, 3, 'the lines were read after the ends');
    assert.equal((await repo.catalog.get(id5))!.status, 'error');
    await deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: large.id });
    assert.equal((await repo.catalog.get(large.id))!.status, 'deleted');
  });

  it('only an available backup can be exported, as in Cinder', async () => {
    const { id } = await repo.backup(repo.file('export.img', mixedVolume(100 * 1024, 15)), { volumeId: 'export' });
    assert.ok((await exportRecord(repo.catalog, id)).backup_url.length > 0);
    await repo.catalog.update(id, { status: 'error', fail_reason: 'test' });
    await assert.rejects(exportRecord(repo.catalog, id), (err: Error) =>
      err instanceof ConflictError && err.message === `backup ${id} is error, not available: only an available backup can be exported`);
  });

  it('a rebuild puts a parent before its child made in the same second, so the next incremental follows the chain', async () => {
    const f = repo.file('same-second.img', mixedVolume(100 * 1024, 17));
    const at = new Date('2026-01-02T03:04:05.000Z');
    const full = await repo.backup(f, { volumeId: 'same-second', backupId: 'ffffffff-0000-4000-8000-000000000001', timestamp: at });
    const incr = await repo.backup(f, { volumeId: 'same-second', incremental: true, backupId: '00000000-0000-4000-8000-000000000001', timestamp: at });
    for (const id of [incr.id, full.id]) await repo.catalog.purge(id);
    await rebuildCatalog(repo.backend, repo.catalog, ['']);
    assert.deepEqual((await repo.catalog.list({ volumeId: 'same-second' })).map((r) => r.id), [full.id, incr.id]);
    assert.equal((await repo.backup(f, { volumeId: 'same-second', incremental: true })).parentId, incr.id);
  });

  it('a rebuild does not hide a storage fault reading a sha256file (a missing one still adopts the backup)', async () => {
    const f = repo.file('rebuild-fault.img', mixedVolume(200 * 1024, 12));
    const { id, prefix, container } = await repo.backup(f, { volumeId: 'rebuild-fault' });
    await repo.catalog.purge(id);
    const faulty = Object.create(repo.backend, {
      readRange: {
        value: (c: string, n: string, at: number, l: number, o?: object) => n === `${prefix}_sha256file`
          ? Promise.reject(new BackendError(`connection reset reading ${n}`, { object: n }))
          : repo.backend.readRange(c, n, at, l, o),
      },
    });
    const r = await rebuildCatalog(faulty, repo.catalog, ['']);
    assert.ok(!r.added.includes(id), 'not adopted with what the fault hid');
    assert.ok(r.unreadable.some((u) => u.includes(prefix) && /connection reset/.test(u)), r.unreadable.join('\n'));
    assert.equal(await repo.catalog.get(id), undefined);

    await repo.backend.delete(container, `${prefix}_sha256file`);
    const again = await rebuildCatalog(repo.backend, repo.catalog, ['']);
    assert.ok(again.added.includes(id));
    assert.equal((await repo.catalog.get(id))!.volume_bytes, 200 * 1024, "a full backup's objects give its length");
  });

  it('a rebuild tells the exact length of a backup whose parent lost its sha256file where its chain gives it, and never a guess', async () => {
    // 4 KiB sha blocks, the last one partial; each incremental changes one block.
    const length = 200 * 1024 + 1000;
    const v = mixedVolume(length, 17);
    const f = repo.file('rebuild-lengths.img', v);
    const chain: { id: string; prefix: string; container: string }[] = [];
    for (const changed of [-1, 10_000, length - 1, 70_000]) { // full; last block kept; last block changed; last block kept
      if (changed >= 0) v[changed] ^= 0xff;
      writeFileSync(f, v);
      chain.push(await repo.backup(f, { volumeId: 'rebuild-lengths', incremental: changed >= 0 }));
    }
    const [full, kept, stored, last] = chain;
    const lengths = async () => Promise.all(chain.map(async (b) => (await repo.catalog.get(b.id))!.volume_bytes));
    assert.deepEqual(await lengths(), [length, length, length, length]);
    /** Adopts the chain again while `lost`'s sha256file is missing; gives it back after. */
    const adoptWithout = async (lost: (typeof chain)[number]) => {
      for (const b of chain) await repo.catalog.purge(b.id);
      const name = `${lost.prefix}_sha256file`;
      const saved = await repo.backend.get(lost.container, name);
      await repo.backend.delete(lost.container, name);
      const r = await rebuildCatalog(repo.backend, repo.catalog, ['']);
      await repo.backend.put(lost.container, name, saved);
      assert.ok(chain.every((b) => r.added.includes(b.id)), 'every backup is adopted');
      return lengths();
    };
    // A full backup's objects give its length, so its children's lengths follow from it.
    assert.deepEqual(await adoptWithout(full!), [length, length, length, length]);
    // Without its own sha256file an incremental's length is unknown; a child whose last block
    // is stored does not need it, nor does that child's child.
    assert.deepEqual(await adoptWithout(kept!), [length, null, length, length]);
    // A child whose last block is its parent's cannot be told (any length within that block
    // would do): none is guessed. A rebuild that can tell it later records it.
    assert.deepEqual(await adoptWithout(stored!), [length, length, null, null]);
    const again = await rebuildCatalog(repo.backend, repo.catalog, ['']);
    assert.deepEqual(again.repaired.filter((x) => x.includes('volume length')).sort(),
      [`${stored!.id}: its volume length is ${length} bytes`, `${last!.id}: its volume length is ${length} bytes`].sort());
    assert.deepEqual(await lengths(), [length, length, length, length]);
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: last!.id, target: path.join(repo.dir, 'rebuild-lengths-out.img'), threads: 1 });
    assert.ok(readFileSync(path.join(repo.dir, 'rebuild-lengths-out.img')).equals(v));
  });

  it('a delete that could remove nothing leaves the backup as it was; leftovers of killed writes go with a delete', async (t) => {
    const { id } = await repo.backup(repo.file('undeletable.img', mixedVolume(200 * 1024, 10)), { volumeId: 'undeletable' });
    const rec = (await repo.catalog.get(id))!;
    const dir = path.join(repo.dir, 'repo', rec.container!);
    // An immutable directory: not even root may remove what is in it.
    const lock = spawnSync('chattr', ['+i', dir], { encoding: 'utf8' });
    assert.equal(lock.status, 0, `chattr +i needs root and ext4: ${lock.stderr}`);
    t.after(() => spawnSync('chattr', ['-i', dir]));
    await assert.rejects(deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id }),
      (err: Error) => err instanceof BackendError && err.message.startsWith(`deleting backup ${id} removed nothing: `));
    assert.equal((await repo.catalog.get(id))!.status, 'available', 'still whole, still available');
    await restoreBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id, threads: 1 });
    spawnSync('chattr', ['-i', dir]);

    // What a process killed in the middle of writing an object leaves: its temporary file.
    const { prefix } = locate(rec);
    const leftover = path.join(dir, `.chunkvault-tmp-${prefix}-00007.0123456789abcdef`);
    writeFileSync(leftover, pseudoRandom(1000, 11));
    const unrelated = path.join(dir, '.chunkvault-tmp-volume_other_20260101000000_backup_x-00001.0123456789abcdef');
    writeFileSync(unrelated, 'another backup in the same container');
    await deleteBackup({ backend: repo.backend, catalog: repo.catalog, backupId: id });
    assert.deepEqual(readdirSync(dir), [path.basename(unrelated)]);
    assert.equal(statSync(unrelated).size, 36);
  });
});
