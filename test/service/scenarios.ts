/** Service scenarios shared by the backends: each runs against a live `chunkvault serve`. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fsp, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Backend } from '../../src/backends/backend.js';
import type { Catalog } from '../../src/catalog/catalog.js';
import { pseudoRandom } from '../support/engine-helpers.js';
import type { RunningService } from '../support/service.js';
import { waitFor } from '../support/wait.js';

export const MiB = 1024 * 1024;
const CHUNK = 512 * 1024;

/** A copy of `prev` with a few 32 KiB blocks rewritten. */
function mutate(prev: Buffer, seed: number): Buffer {
  const next = Buffer.from(prev);
  for (let i = 0; i < 3; i++) {
    const block = (seed * 7919 + i * 104729) % (prev.length / 32768);
    pseudoRandom(32768, seed * 31 + i).copy(next, block * 32768);
  }
  return next;
}

/** Backups of one volume, fed through a FIFO so the test decides when the source ends. */
export async function fifoVolume(dir: string, name: string): Promise<{ path: string; open: Promise<fsp.FileHandle> }> {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  return { path: p, open: fsp.open(p, 'w') };
}

export async function objectsUnder(backend: Backend, catalog: Catalog, backupId: string): Promise<string[]> {
  const rec = (await catalog.get(backupId))!;
  assert.ok(rec.container && rec.service_metadata, 'the record names where its objects live');
  const names: string[] = [];
  for await (const n of backend.list(rec.container, rec.service_metadata)) names.push(n);
  return names;
}

/**
 * 20 backup jobs over 5 volumes (a full and three incrementals each) submitted at once and
 * run by the service's workers; then 20 restores, each compared byte for byte.
 */
export async function fleetScenario(svc: RunningService, dir: string, tag: string): Promise<void> {
  const V = 5;
  const R = 4;
  const vols = path.join(dir, 'vols');
  const out = path.join(dir, 'vols', 'out');
  mkdirSync(out, { recursive: true });
  const files: string[][] = [];
  for (let v = 0; v < V; v++) {
    let content = pseudoRandom(3 * MiB, 1000 + v);
    content.fill(0, MiB, MiB + 256 * 1024); // a stretch of zeros
    files.push([]);
    for (let r = 0; r < R; r++) {
      if (r > 0) content = mutate(content, v * 10 + r);
      const f = path.join(vols, `${tag}-v${v}-r${r}.img`);
      writeFileSync(f, content);
      files[v]!.push(f);
    }
  }
  // Both workers claim from the start: a worker process slow to start on a loaded machine
  // would otherwise find every job taken.
  await waitFor('both workers to start', () => (svc.logs().match(/"worker started"/g) ?? []).length >= 2);
  const ids: string[][] = await Promise.all(files.map(async (rounds, v) => {
    const got: string[] = [];
    for (let r = 0; r < R; r++) {
      const res = await svc.request('POST', '/v1/backups', {
        volume: rounds[r], volume_id: `${tag}-vol-${v}`, incremental: r > 0, chunk_size: CHUNK, name: `v${v}r${r}`,
      });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      assert.equal(res.body.backup.status, 'creating');
      got.push(res.body.backup.id);
    }
    return got;
  }));
  const all = ids.flat();
  const done = await svc.until('/v1/jobs?kind=backup&limit=1000', (b) =>
    all.every((id) => b.jobs.some((j: any) => j.backup_id === id && j.status !== 'queued' && j.status !== 'running')));
  const jobs = (done.jobs as any[]).filter((j) => all.includes(j.backup_id));
  assert.deepEqual(jobs.filter((j) => j.status !== 'succeeded').map((j) => `${j.backup_id}: ${j.error}`), []);
  assert.ok(new Set(jobs.map((j) => j.worker)).size >= 2, 'both worker processes ran jobs');
  for (let v = 0; v < V; v++) {
    for (let r = 0; r < R; r++) {
      const { body } = await svc.request('GET', `/v1/backups/${ids[v]![r]}`);
      const b = body.backup;
      assert.equal(b.status, 'available');
      assert.equal(b.volume_bytes, 3 * MiB);
      assert.equal(b.parent_id, r === 0 ? null : ids[v]![r - 1], 'each incremental is based on the one before it');
      assert.equal(b.is_incremental, r > 0);
      assert.equal(b.has_dependent_backups, r < R - 1);
      if (r === 0) assert.equal(b.object_count, 6);
      else assert.ok(b.object_count >= 1 && b.object_count <= 3, `incremental stores only changed extents (${b.object_count})`);
    }
  }
  // Restores of every backup, all queued at once.
  const restores = await Promise.all(all.map(async (id, i) => {
    const target = path.join(out, `${tag}-restore-${i}.img`);
    const res = await svc.request('POST', `/v1/backups/${id}/restore`, { target });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.equal(res.body.restore.backup_id, id);
    return { id, target, job: res.body.restore.job_id as string, expected: files[Math.floor(i / R)]![i % R]! };
  }));
  const rj = await svc.until('/v1/jobs?kind=restore&limit=1000', (b) =>
    restores.every((x) => b.jobs.some((j: any) => j.id === x.job && ['succeeded', 'failed', 'cancelled'].includes(j.status))));
  for (const x of restores) {
    const job = rj.jobs.find((j: any) => j.id === x.job);
    assert.equal(job.status, 'succeeded', job.error);
    assert.ok(readFileSync(x.target).equals(readFileSync(x.expected)), `restore of ${x.id} is byte-identical`);
    const { body } = await svc.request('GET', `/v1/backups/${x.id}`);
    assert.equal(body.backup.status, 'available', 'a restore gives its backup back');
  }
}
