import { randomBytes } from 'node:crypto';
import { constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BackendError, InvalidInputError, NotFoundError } from '../errors.js';
import { DirectWriter } from '../io/direct-writer.js';
import type { Backend, CallOptions, ListOptions } from './backend.js';

/** Files being written carry this prefix, which no Cinder object prefix starts with. */
export const TEMP_PREFIX = '.chunkvault-tmp-';

function throwIfAborted(signal?: AbortSignal): void {
  signal?.throwIfAborted();
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

  async ensureContainer(container: string, opts?: CallOptions): Promise<void> {
    throwIfAborted(opts?.signal);
    const dir = this.resolve(container);
    try {
      await fsp.mkdir(dir, { recursive: true });
      if (container !== '') await fsp.chmod(dir, 0o770);
    } catch (err) {
      throw new BackendError(`cannot create container directory ${dir}: ${(err as Error).message}`, {
        container,
        cause: err,
      });
    }
  }

  async *list(container: string, prefix: string, opts?: ListOptions): AsyncIterable<string> {
    const after = opts?.after;
    for await (const name of this.walk(container, prefix, opts)) if (after === undefined || name > after) yield name;
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
    throwIfAborted(opts?.signal);
    const target = this.resolve(container, name);
    const dir = path.dirname(target);
    // Named after the object, so that `sweep` finds what a killed process left.
    const tmp = path.join(dir, `${TEMP_PREFIX}${path.basename(target)}.${randomBytes(8).toString('hex')}`);
    let out: DirectWriter | undefined;
    try {
      if (name.includes('/')) await fsp.mkdir(dir, { recursive: true });
      out = await DirectWriter.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o660);
      await out.write(data, 0);
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
    throwIfAborted(opts?.signal);
    const file = this.resolve(container, name);
    try {
      return await fsp.readFile(file, { signal: opts?.signal });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new NotFoundError(`object not found: ${file}`, { container, object: name });
      if ((err as Error).name === 'AbortError') throw err;
      throw new BackendError(`cannot read ${file}: ${(err as Error).message}`, { container, object: name, cause: err });
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

  async flush(container: string, opts?: CallOptions): Promise<void> {
    throwIfAborted(opts?.signal);
    const base = this.resolve(container);
    for (const dir of [...this.dirty]) {
      if (dir !== base && !dir.startsWith(base + path.sep)) continue;
      this.dirty.delete(dir);
      const fh = await fsp.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY).catch(() => undefined);
      if (!fh) continue;
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  }

  async close(): Promise<void> {}
}
