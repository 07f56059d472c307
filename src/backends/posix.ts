import { randomBytes } from 'node:crypto';
import { constants as fsc, promises as fsp, type Dirent } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BackendError, InvalidInputError, NotFoundError } from '../errors.js';
import { DirectWriter } from '../io/direct-writer.js';
import { readFileRange, readWhole } from '../io/read-whole.js';
import type { Backend, CallOptions, ListOptions, ObjectPieces, ObjectRange } from './backend.js';

/** Files being written carry this prefix, which no Cinder object prefix starts with. */
export const TEMP_PREFIX = '.chunkvault-tmp-';

function throwIfAborted(signal?: AbortSignal): void {
  signal?.throwIfAborted();
}

/**
 * Why a recursive mkdir of `dir` failed: Node reports ENOENT for whatever stopped it below the
 * deepest existing directory (a read-only filesystem, a permission); one plain mkdir there
 * gives the real reason.
 */
async function mkdirCause(dir: string, err: NodeJS.ErrnoException): Promise<Error> {
  let missing = dir;
  while (path.dirname(missing) !== missing) {
    const exists = await fsp.stat(path.dirname(missing)).then(() => true, () => false);
    if (exists) break;
    missing = path.dirname(missing);
  }
  return fsp.mkdir(missing).then(() => err, (cause: Error) => cause);
}

/**
 * A repository in a POSIX directory, laid out as Cinder's posix driver does: a container
 * is a sub-directory of the root (it may contain '/'), an object is a file. Writes go to a
 * temporary name, are fsynced and renamed; flush() fsyncs the directories.
 */
export class PosixBackend implements Backend {
  readonly kind = 'posix' as const;
  readonly nestedContainers = true;
  readonly url: string;
  private readonly dirty = new Set<string>();

  constructor(readonly root: string) {
    this.root = path.resolve(root);
    this.url = pathToFileURL(this.root).href;
  }

  private resolve(container: string, name = ''): string {
    const full = path.resolve(this.root, container, name);
    const rel = path.relative(this.root, full);
    if (rel.startsWith('..') || path.isAbsolute(rel)) {
      throw new InvalidInputError(`path escapes the repository root: container '${container}', object '${name}'`);
    }
    const long = rel.split(path.sep).find((part) => Buffer.byteLength(part) > 255);
    if (long !== undefined) {
      throw new InvalidInputError(`container '${container}' or object '${name}' has a name part longer than 255 bytes, the most a file name can be`);
    }
    return full;
  }

  /** mkdir -p that remembers the directories whose entries it changed, for flush() to fsync. */
  private async makeDirectories(dir: string): Promise<void> {
    const first = await fsp.mkdir(dir, { recursive: true }).catch(async (err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT' ? await mkdirCause(dir, err) : err;
    });
    if (first === undefined) return;
    for (let d = dir; ; d = path.dirname(d)) {
      this.dirty.add(path.dirname(d));
      if (d === first || d === path.dirname(d)) break;
    }
  }

  async ensureContainer(container: string, opts?: CallOptions): Promise<void> {
    throwIfAborted(opts?.signal);
    const dir = this.resolve(container);
    try {
      await this.makeDirectories(dir);
      if (container !== '') await fsp.chmod(dir, 0o770);
    } catch (err) {
      throw new BackendError(`cannot create container directory ${dir}: ${(err as Error).message}`, {
        container,
        cause: err,
      });
    }
  }

  async *list(container: string, prefix: string, opts?: ListOptions): AsyncIterable<string> {
    const after = opts?.after === undefined ? undefined : Buffer.from(opts.after);
    for await (const name of this.walk(container, prefix, opts)) {
      if (after === undefined || Buffer.compare(Buffer.from(name), after) > 0) yield name;
    }
  }

  private async *walk(container: string, prefix: string, opts?: CallOptions): AsyncIterable<string> {
    const base = this.resolve(container);
    const walk = async function* (dir: string, rel: string): AsyncIterable<string> {
      throwIfAborted(opts?.signal);
      let entries;
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return;
        throw new BackendError(`cannot list ${dir}: ${(err as Error).message}`, { container, cause: err });
      }
      // In ascending order of the names listed (a directory's names all start with 'dir/').
      const key = (e: Dirent) => Buffer.from(e.isDirectory() ? `${e.name}/` : e.name);
      entries.sort((a, b) => Buffer.compare(key(a), key(b)));
      for (const e of entries) {
        if (e.name.startsWith(TEMP_PREFIX)) continue;
        const name = rel + e.name;
        if (e.isDirectory()) {
          // Only descend where the prefix can still match.
          const sub = name + '/';
          if (sub.startsWith(prefix) || prefix.startsWith(sub)) yield* walk(path.join(dir, e.name), sub);
        } else if (name.startsWith(prefix)) {
          yield name;
        }
      }
    };
    yield* walk(base, '');
  }

  async put(container: string, name: string, data: Uint8Array, opts?: CallOptions): Promise<void> {
    await this.putPieces(container, name, { length: data.length, pieces: () => [data] }, opts);
  }

  async putPieces(container: string, name: string, data: ObjectPieces, opts?: CallOptions): Promise<void> {
    throwIfAborted(opts?.signal);
    const target = this.resolve(container, name);
    const dir = path.dirname(target);
    // Named after the object, so that `sweep` finds what a killed process left.
    const tmp = path.join(dir, `${TEMP_PREFIX}${path.basename(target)}.${randomBytes(8).toString('hex')}`);
    let out: DirectWriter | undefined;
    try {
      if (name.includes('/')) await this.makeDirectories(dir);
      out = await DirectWriter.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o660);
      const written = await out.writePieces(data.pieces(), () => throwIfAborted(opts?.signal));
      if (written !== data.length) throw new Error(`the pieces held ${written} bytes, not the length given, ${data.length}`);
      await out.fh.chmod(0o660); // as Cinder's posix driver sets it, whatever the umask
      await out.sync();
      await out.close();
      out = undefined;
      throwIfAborted(opts?.signal);
      await fsp.rename(tmp, target);
      this.dirty.add(dir);
    } catch (err) {
      await out?.close().catch(() => {});
      await fsp.rm(tmp, { force: true }).catch(() => {});
      if ((err as Error).name === 'AbortError') throw err;
      throw new BackendError(`cannot write ${target}: ${(err as Error).message}`, {
        container,
        object: name,
        cause: err,
      });
    }
  }

  async get(container: string, name: string, opts?: CallOptions): Promise<Buffer> {
    return this.reading(container, name, opts, (file) => readWhole(file, { signal: opts?.signal }));
  }

  async readRange(container: string, name: string, offset: number, length: number, opts?: CallOptions): Promise<ObjectRange> {
    return this.reading(container, name, opts, (file) => readFileRange(file, offset, length, { signal: opts?.signal }));
  }

  /** Runs `read` on the object's file; a missing file is NotFoundError. */
  private async reading<T>(container: string, name: string, opts: CallOptions | undefined, read: (file: string) => Promise<T>): Promise<T> {
    throwIfAborted(opts?.signal);
    const file = this.resolve(container, name);
    try {
      return await read(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new NotFoundError(`object not found: ${file}`, { container, object: name });
      if ((err as Error).name === 'AbortError') throw err;
      throw new BackendError(`cannot read ${file}: ${(err as Error).message}`, { container, object: name, cause: err });
    }
  }

  async exists(container: string, name: string, opts?: CallOptions): Promise<boolean> {
    throwIfAborted(opts?.signal);
    const file = this.resolve(container, name);
    try {
      return (await fsp.stat(file)).isFile();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw new BackendError(`cannot look up ${file}: ${(err as Error).message}`, { container, object: name, cause: err });
    }
  }

  async delete(container: string, name: string, opts?: CallOptions): Promise<void> {
    throwIfAborted(opts?.signal);
    const file = this.resolve(container, name);
    try {
      await fsp.unlink(file);
      this.dirty.add(path.dirname(file));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new BackendError(`cannot delete ${file}: ${(err as Error).message}`, { container, object: name, cause: err });
    }
  }

  async sweep(container: string, prefix: string, opts?: CallOptions): Promise<void> {
    throwIfAborted(opts?.signal);
    const base = this.resolve(container, prefix);
    const dir = prefix.endsWith('/') ? base : path.dirname(base);
    const start = TEMP_PREFIX + (prefix.endsWith('/') ? '' : path.basename(base));
    const names = await fsp.readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.startsWith(start)) continue;
      await fsp.rm(path.join(dir, name), { force: true }).catch((err: Error) => {
        throw new BackendError(`cannot remove ${path.join(dir, name)}: ${err.message}`, { container, cause: err });
      });
      this.dirty.add(dir);
    }
  }

  /** fsyncs the directories changed in the container, and those created on the way to it. */
  async flush(container: string, opts?: CallOptions): Promise<void> {
    throwIfAborted(opts?.signal);
    const base = this.resolve(container);
    const related = (dir: string) => dir === base || dir.startsWith(base + path.sep) || base.startsWith(dir + path.sep);
    for (const dir of [...this.dirty].filter(related)) {
      let fh;
      try {
        fh = await fsp.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          this.dirty.delete(dir);
          continue;
        }
        throw new BackendError(`cannot open directory ${dir} to sync it: ${(err as Error).message}`, { container, cause: err });
      }
      try {
        await fh.sync();
        this.dirty.delete(dir);
      } catch (err) {
        throw new BackendError(`cannot sync directory ${dir}: ${(err as Error).message}`, { container, cause: err });
      } finally {
        await fh.close();
      }
    }
  }

  async close(): Promise<void> {}
}
