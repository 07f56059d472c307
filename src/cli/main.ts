#!/usr/bin/env node
/** The `chunkvault` command line: one sub-command per operation, `--json` for machines. */
import { randomUUID } from 'node:crypto';
import { Command, CommanderError, Option } from 'commander';
import { requireBackup } from '../catalog/catalog.js';
import { COMPRESSION_CHOICES } from '../codecs/codec.js';
import { DEFAULT_COMPRESSION, runBackup } from '../engine/backup.js';
import { deleteBackup } from '../engine/delete.js';
import { exportRecord, importRecord, rebuildCatalog } from '../engine/records.js';
import { locate, readMetadata } from '../engine/repository.js';
import { resolveChain, restoreBackup } from '../engine/restore.js';
import { canonicalSourcePath, openSource, volumeIdForPath } from '../engine/source.js';
import { MAX_THREADS } from '../engine/worker-pool.js';
import { ChunkvaultError, InvalidInputError } from '../errors.js';
import { snakeCaseKeys } from '../format/snake-case.js';
import { cancellation, openContext, type Context, type GlobalOptions } from './context.js';
import { formatBytes, formatRate, parseSize, table } from './output.js';

/** Set while `restore -` writes the volume to standard output. */
let stdoutCarriesVolume = false;

/** A whole number from `min` to `max`. */
function countOption(name: string, min: number, max: number) {
  return (v: string) => {
    const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
    if (!(n >= min && n <= max)) throw new InvalidInputError(`${name}: expected a whole number from ${min} to ${max}, got '${v}'`);
    return n;
  };
}

/** A compression name in any case, as Cinder takes it. */
function compressionOption(v: string): string {
  if (!COMPRESSION_CHOICES.includes(v.toLowerCase())) {
    throw new InvalidInputError(`--compression: '${v}' is not one of ${COMPRESSION_CHOICES.join(', ')}`);
  }
  return v;
}

/** A number of seconds (fractions allowed); `positive` refuses 0. */
function secondsOption(name: string, positive = false) {
  return (v: string) => {
    const n = /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : NaN;
    if (!(positive ? n > 0 : n >= 0)) throw new InvalidInputError(`${name}: expected a ${positive ? 'positive ' : ''}number of seconds, got '${v}'`);
    return n;
  };
}

function sizeOption(name: string) {
  return (v: string) => {
    try {
      return parseSize(v);
    } catch (err) {
      throw new InvalidInputError(`${name}: ${(err as Error).message}`);
    }
  };
}

async function withContext(cmd: Command, fn: (ctx: Context) => Promise<void>): Promise<void> {
  const ctx = await openContext(cmd.optsWithGlobals<GlobalOptions>());
  try {
    await fn(ctx);
  } finally {
    await ctx.close();
  }
}

/** Runs `fn` with a progress bar (when stderr is a terminal) that is closed however it ends. */
async function withProgress<T>(ctx: Context, fn: (progress: ReturnType<Context['progress']>) => Promise<T>): Promise<T> {
  const progress = ctx.progress();
  try {
    return await fn(progress);
  } finally {
    progress.done();
  }
}

function print(ctx: Context, value: unknown, human: string, stream: NodeJS.WritableStream = process.stdout): void {
  if (ctx.json) stream.write(JSON.stringify(snakeCaseKeys(value), null, 2) + '\n');
  else if (!ctx.quiet) stream.write(human + '\n');
}

const program = new Command('chunkvault')
  .description('Block-volume backups in OpenStack Cinder\'s chunked repository format')
  .option('--repo <address>', 'repository: a directory, file:/path, s3://bucket?... or swift://container?... (env CHUNKVAULT_REPO; default $XDG_DATA_HOME/chunkvault/repository)')
  .option('--catalog <file>', 'catalog: a SQLite file, or postgres://user:password@host:port/db (env CHUNKVAULT_CATALOG; default $XDG_DATA_HOME/chunkvault/catalog.db)')
  .option('--json', 'print one JSON result object')
  .option('-q, --quiet', 'print nothing but errors')
  // Usage errors are reported like every other error (one line, JSON with --json): see below.
  .configureOutput({ outputError: () => {} })
  .exitOverride();

program
  .command('backup')
  .description('back up a volume (file, block device, or - for stdin)')
  .argument('<source>', 'volume to read')
  .option('--incremental', 'store only blocks changed since the latest backup of the volume')
  .option('--parent <id>', 'explicit parent backup for an incremental backup')
  .option('--compression <algorithm>', `compression: ${COMPRESSION_CHOICES.join(', ')} (any case)`, compressionOption, DEFAULT_COMPRESSION)
  .option('--chunk-size <bytes>', 'bytes per data object (default 8M)', sizeOption('--chunk-size'))
  .option('--sha-block-size <bytes>', 'bytes per SHA-256 block (default 32K, or the parent\'s)', sizeOption('--sha-block-size'))
  .option('--container <name>', 'container (posix: directory under the repository)')
  .option('--name <name>', 'backup name')
  .option('--description <text>', 'backup description')
  .option('--volume-id <id>', 'volume id: letters, digits, . _ - (default: the parent\'s with --parent, else derived from the source path)')
  .option('--backup-id <id>', 'backup id (default: a new UUID)')
  .option('--availability-zone <az>', 'availability zone recorded in s3/swift object names', 'nova')
  .option('--threads <n>', 'hashing/compression threads', countOption('--threads', 1, MAX_THREADS))
  .addOption(new Option('--timestamp <iso>', 'creation time (reproducible backups)').hideHelp())
  .action(async (source: string, o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      if (source === '-' && process.stdin.isTTY) {
        throw new InvalidInputError('stdin is a terminal: pipe the volume into it (cat disk.img | chunkvault backup -) or name the file');
      }
      if (source === '-' && o.incremental && !o.volumeId && !o.parent) {
        throw new InvalidInputError('an incremental backup of stdin needs --volume-id (or --parent): stdin has no path to name its volume');
      }
      // An explicit parent names the volume; otherwise stdin is a new volume, a path its own.
      const volumeId: string = o.volumeId ?? (o.parent
        ? (await requireBackup(ctx.catalog, o.parent, 'parent backup')).volume_id
        : source === '-' ? randomUUID() : volumeIdForPath(canonicalSourcePath(source)));
      let timestamp: Date | undefined;
      if (o.timestamp) {
        timestamp = new Date(o.timestamp);
        if (Number.isNaN(timestamp.getTime())) throw new InvalidInputError(`--timestamp: invalid time '${o.timestamp}'`);
      }
      const src = await openSource(source);
      try {
        const r = await withProgress(ctx, (progress) => runBackup({
          backend: ctx.backend, catalog: ctx.catalog, source: src, volumeId, backupId: o.backupId,
          incremental: !!o.incremental, parentId: o.parent, compression: o.compression, chunkSize: o.chunkSize,
          shaBlockSize: o.shaBlockSize, container: o.container, name: o.name, description: o.description,
          availabilityZone: o.availabilityZone, timestamp, threads: o.threads, signal: ctx.signal, ...progress,
        }));
        print(ctx, r,
          `backup ${r.id} (${r.kind}) of volume ${r.volumeId}: ${formatBytes(r.bytes)} in ${r.seconds.toFixed(1)} s ` +
          `(${formatRate(r.bytesPerSecond)}), ${r.objects} objects, ${formatBytes(r.storedBytes)} stored`);
      } finally {
        await src.close();
      }
    }),
  );

program
  .command('list')
  .description('list the backups of the repository')
  .option('--volume <id>', 'only this volume')
  .option('--all', 'include deleted backups')
  .action(async (o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      const rows = await ctx.catalog.list({ volumeId: o.volume, repository: ctx.backend.url, includeDeleted: !!o.all });
      if (ctx.json) return print(ctx, rows, '');
      ctx.say(table(['ID', 'VOLUME', 'PARENT', 'KIND', 'SIZE', 'OBJECTS', 'CREATED', 'STATUS'], rows.map((r) => [
        r.id, r.volume_id, r.parent_id ?? '-', r.parent_id ? 'incremental' : 'full',
        r.volume_bytes === null ? `${r.size} GiB` : formatBytes(r.volume_bytes), String(r.object_count),
        r.created_at.replace('T', ' ').replace(/\.\d+Z$|Z$/, ''), r.status,
      ])));
    }),
  );

program
  .command('show')
  .description('show a backup: record, chain and objects')
  .argument('<id>')
  .action(async (id: string, _o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      const rec = await requireBackup(ctx.catalog, id);
      const chain = await resolveChain(ctx.catalog, id).then((c) => c.map((r) => r.id)).catch((e: Error) => `unresolvable: ${e.message}`);
      const meta = rec.status === 'available' ? await readMetadata(ctx.backend, locate(rec), { signal: ctx.signal }) : undefined;
      const objects = meta?.objects ?? [];
      if (ctx.json) return print(ctx, { record: rec, chain, objects }, '');
      const fields = Object.entries(rec).map(([k, v]) => [k, v === null ? '-' : String(v)]);
      ctx.say(table(['FIELD', 'VALUE'], fields));
      ctx.say(`\nchain: ${Array.isArray(chain) ? chain.join(' -> ') : chain}\n`);
      ctx.say(table(['OBJECT', 'OFFSET', 'LENGTH', 'COMPRESSION', 'MD5'], objects.map((ob) => [
        ob.name, String(ob.offset), String(ob.length), ob.compression, ob.md5,
      ])));
    }),
  );

program
  .command('restore')
  .description('restore a backup (and its chain) into a file, a block device, a named pipe or - (stdout)')
  .argument('<id>')
  .argument('<target>')
  .option('--to-existing', 'write into an existing file or block device in place')
  .option('--force', 'replace an existing regular file')
  .option('--threads <n>', 'decompression/verification threads', countOption('--threads', 1, MAX_THREADS))
  .action(async (id: string, target: string, o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      // `-`: the volume goes to standard output, and messages to stderr.
      const toStdout = target === '-';
      if (toStdout && process.stdout.isTTY) {
        throw new InvalidInputError('standard output is a terminal: redirect it, or name a file or block device to restore into');
      }
      stdoutCarriesVolume = toStdout;
      if (toStdout && (o.toExisting || o.force)) throw new InvalidInputError('--to-existing and --force name a file or device: a restore to - writes standard output');
      const r = await withProgress(ctx, (progress) => restoreBackup({
        backend: ctx.backend, catalog: ctx.catalog, backupId: id, target, stream: toStdout ? process.stdout : undefined,
        toExisting: !!o.toExisting, force: !!o.force, threads: o.threads, signal: ctx.signal, ...progress,
      }));
      print(ctx, r, `restored backup ${id} (chain of ${r.chain.length}) to ${target}: ${formatBytes(r.bytes)} verified ` +
        `in ${r.seconds.toFixed(1)} s (${formatRate(r.bytesPerSecond)})`, toStdout ? process.stderr : process.stdout);
    }),
  );

program
  .command('verify')
  .description('check every object and block a restore of the backup reads (of it and its chain), without writing anything')
  .argument('<id>')
  .option('--threads <n>', 'verification threads', countOption('--threads', 1, MAX_THREADS))
  .action(async (id: string, o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      const r = await withProgress(ctx, (progress) =>
        restoreBackup({ backend: ctx.backend, catalog: ctx.catalog, backupId: id, threads: o.threads, signal: ctx.signal, ...progress }));
      print(ctx, { ...r, verified: true }, `backup ${id} verified: ${formatBytes(r.bytes)}, ${r.objectsRead} objects, chain of ${r.chain.length}`);
    }),
  );

program
  .command('delete')
  .description('delete a backup (cancels it if it is still being written)')
  .argument('<id>')
  .option('--wait <seconds>', 'how long to wait for a running writer to stop', secondsOption('--wait'), 60)
  .action(async (id: string, o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      const r = await deleteBackup({ backend: ctx.backend, catalog: ctx.catalog, backupId: id, waitMs: o.wait * 1000, signal: ctx.signal });
      print(ctx, r, r.cancelledRunning ? `cancelled and deleted running backup ${id}` : `deleted backup ${id} (${r.objectsDeleted} object${r.objectsDeleted === 1 ? '' : 's'} removed)`);
    }),
  );

const catalogCmd = program.command('catalog').description('catalog maintenance');
catalogCmd
  .command('rebuild')
  .description('recreate catalog records from the *_metadata objects of the repository, and repair those a dead process left')
  .option('--container <name...>', "containers to scan (object stores; default: the address's bucket or container)")
  .action(async (o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      const containers = ctx.backend.nestedContainers ? [''] : (o.container ?? [ctx.backend.defaultContainer ?? 'volumebackups']);
      const r = await rebuildCatalog(ctx.backend, ctx.catalog, containers, ctx.signal);
      print(ctx, r, `${r.added.length} backup(s) added, ${r.known.length} already known, ${r.repaired.length} repaired, ` +
        `${r.unreadable.length} unreadable` + r.repaired.map((u) => `\n  repaired: ${u}`).join('') +
        r.unreadable.map((u) => `\n  unreadable: ${u}`).join(''));
    }),
  );

program
  .command('export-record')
  .description('print a backup record in Cinder\'s backup-export encoding')
  .argument('<id>')
  .action(async (id: string, _o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      const r = await exportRecord(ctx.catalog, id);
      print(ctx, r, `backup_service: ${r.backup_service}\nbackup_url: ${r.backup_url}`);
    }),
  );

program
  .command('import-record')
  .description('import a record from Cinder\'s backup-export (backup_url, or - to read it from stdin)')
  .argument('<backup-url>')
  .action(async (url: string, _o, cmd: Command) =>
    withContext(cmd, async (ctx) => {
      let text = url;
      if (url === '-') {
        const chunks: Buffer[] = [];
        for await (const c of process.stdin) chunks.push(c as Buffer);
        text = Buffer.concat(chunks).toString('utf8').trim();
      }
      if (text.startsWith('{')) {
        try {
          text = JSON.parse(text).backup_url ?? '';
        } catch {
          throw new InvalidInputError('import-record: input looks like JSON but does not parse');
        }
      }
      const rec = await importRecord(ctx.backend, ctx.catalog, text, ctx.signal);
      print(ctx, rec, `imported backup ${rec.id} (volume ${rec.volume_id}, container ${rec.container})`);
    }),
  );

const collect = (v: string, all: string[] = []) => [...all, v];
const serviceOptions = (cmd: Command) =>
  cmd
    .option('--config <file>', 'service configuration (JSON: tokens, volumes, listen, repo, catalog, lease_seconds, shutdown_timeout_seconds)')
    .option('--volume <pattern>', 'allow this volume path or glob pattern (repeatable; env CHUNKVAULT_VOLUMES)', collect)
    .option('--lease-seconds <n>', 'job lease: a worker silent this long is presumed dead (default 30)', secondsOption('--lease-seconds', true))
    .option('--shutdown-timeout <seconds>', 'on SIGTERM, how long running jobs may take to finish before they are cancelled (default 30)', secondsOption('--shutdown-timeout'))
    .option('--threads <n>', 'hashing/compression threads per worker', countOption('--threads', 1, MAX_THREADS));

serviceOptions(program
  .command('serve')
  .description('run the HTTP API (port 8776) and worker processes sharing the catalog')
  .option('--listen <[host:]port>', 'address to listen on (default 127.0.0.1:8776; env CHUNKVAULT_LISTEN)')
  .option('--workers <n>', 'worker processes to run beside the API', countOption('--workers', 0, 64), 1))
  .action(async (o, cmd: Command) => {
    const { runServe } = await import('../service/run.js');
    await runServe({ ...cmd.optsWithGlobals(), ...o });
  });

serviceOptions(program
  .command('worker')
  .description('run one worker: claims queued jobs from the catalog and runs them'))
  .action(async (o, cmd: Command) => {
    const { runWorker } = await import('../service/run.js');
    await runWorker({ ...cmd.optsWithGlobals(), ...o });
  });

/** One line on stderr; with --json also one error object on stdout (unless stdout carries a volume). */
function fail(message: string, code: number, kind: string): never {
  // One line, whatever a path holds: control characters are written as escapes.
  const line = message.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  process.stderr.write(`chunkvault: error: ${line}\n`);
  if (program.opts<GlobalOptions>().json && !stdoutCarriesVolume) {
    process.stdout.write(JSON.stringify({ error: { code, kind, message } }, null, 2) + '\n');
  }
  process.exit(code);
}

// A reader that stops early (`chunkvault list | head -1`) ends the output, not with a stack
// trace. When stdout carries a volume, the restore itself reports the broken pipe.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (stdoutCarriesVolume) return;
  if (err.code === 'EPIPE') process.exit(0);
  fail(`cannot write to standard output: ${err.message}`, 7, 'VolumeIOError');
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) process.exit(0); // --help, --version
    // A command group without its sub-command shows its help (on stderr) and fails.
    const what = err.code === 'commander.help' ? 'a sub-command is needed' : err.message.replace(/^error: /, '');
    fail(`${what} (see chunkvault --help)`, 2, 'InvalidInputError');
  }
  // A cancel may surface as whatever the interrupted call threw (an AbortError): it is a cancel.
  const cancel = cancellation();
  if (cancel && !(err instanceof ChunkvaultError)) fail(cancel.message, cancel.exitCode, cancel.name);
  if (err instanceof ChunkvaultError) fail(err.message, err.exitCode, err.name);
  if (process.env.CHUNKVAULT_DEBUG) console.error(err);
  fail(`unexpected failure: ${(err as Error)?.message ?? String(err)}`, 70, 'UnexpectedError');
}
