/**
 * The storage seam: a flat namespace of named objects inside containers, as Cinder's
 * chunked driver sees it (posix directory, S3 bucket, Swift container). The engine talks
 * only to this interface; retries wrap it (RetryBackend).
 *
 * Object names may contain '/'. Every call takes an AbortSignal; an aborted call rejects
 * (with the signal's reason) and leaves no partial object visible under its name.
 */
export interface CallOptions {
  signal?: AbortSignal;
  /** Called each time the call is tried again after a transient fault (RetryBackend). */
  onRetry?: () => void;
}

export interface ListOptions extends CallOptions {
  /** Only names after this one (a listing resumed after a fault goes on where it stopped). */
  after?: string;
}

/**
 * An object given a piece at a time, for objects too large to hold twice in memory (the
 * sha256file of a large volume). `pieces()` yields the bytes from the start, again on every
 * call (a retried or checked write reads them more than once); they add up to `length`.
 */
export interface ObjectPieces {
  readonly length: number;
  pieces(): Iterable<Uint8Array>;
}

/** Part of an object: `bytes` from the requested offset, and the size of the whole object. */
export interface ObjectRange {
  bytes: Buffer;
  size: number;
}

export type BackendKind = 'posix' | 's3' | 'swift';

export interface Backend {
  readonly kind: BackendKind;
  /** Where the repository is, without credentials (safe to log and store). */
  readonly url: string;
  /**
   * True when a container may be nested inside another (posix directories): a `/` in a
   * name found by listing the root may separate a container from an object name.
   */
  readonly nestedContainers: boolean;
  /** The largest object the store takes in one write, if it has a limit. */
  readonly maxObjectBytes?: number;
  /** Container for new backups named by the repository address (object stores); else Cinder's default. */
  readonly defaultContainer?: string;

  /** Creates the container if needed; an existing one is fine. */
  ensureContainer(container: string, opts?: CallOptions): Promise<void>;

  /**
   * Yields the name of every object in `container` whose name starts with `prefix`, each
   * exactly once, in ascending order of their UTF-8 bytes (as S3 and Swift list), only those
   * after `opts.after` when it is given. A missing container yields nothing.
   */
  list(container: string, prefix: string, opts?: ListOptions): AsyncIterable<string>;

  /**
   * Stores `data` under `name`, replacing any previous object. The object appears whole
   * or not at all; the backend checks what the store received (fsync, ETag, Content-MD5).
   */
  put(container: string, name: string, data: Uint8Array, opts?: CallOptions): Promise<void>;

  /** As `put`, with the data given as pieces; the whole of it is never held in memory at once. */
  putPieces(container: string, name: string, data: ObjectPieces, opts?: CallOptions): Promise<void>;

  /**
   * Returns up to `length` bytes of the object from `offset` (fewer at its end, none from
   * its end on) and the object's size; a missing object rejects with NotFoundError.
   */
  readRange(container: string, name: string, offset: number, length: number, opts?: CallOptions): Promise<ObjectRange>;

  /** Returns the whole object; a missing one rejects with NotFoundError. */
  get(container: string, name: string, opts?: CallOptions): Promise<Buffer>;

  /** Whether the object exists, found without reading it (a HEAD request, a stat). */
  exists(container: string, name: string, opts?: CallOptions): Promise<boolean>;

  /** Removes the object; a missing object is not an error. */
  delete(container: string, name: string, opts?: CallOptions): Promise<void>;

  /** Makes every completed put in `container` durable (posix: directory fsync). */
  flush(container: string, opts?: CallOptions): Promise<void>;

  /**
   * Removes what unfinished puts of objects named `prefix`* left behind (a process killed
   * mid-write). Only backends whose puts can leave something have it.
   */
  sweep?(container: string, prefix: string, opts?: CallOptions): Promise<void>;

  /** Releases connections and handles. */
  close(): Promise<void>;
}

/** Statistics a wrapper may add to results (retries performed, faults seen). */
export interface BackendStats {
  retries: number;
}

/**
 * A view of `backend` for one operation that counts the retries of its own calls only: other
 * operations may share the backend at the same time (a service's API beside a job).
 */
export function countingRetries(backend: Backend): { backend: Backend; retries(): number } {
  let retries = 0;
  const counted = <O extends CallOptions>(opts?: O): O => ({ ...opts, onRetry: () => (retries++, opts?.onRetry?.()) }) as O;
  const sweep = backend.sweep?.bind(backend);
  const view: Backend = {
    get kind() { return backend.kind; },
    get url() { return backend.url; },
    get nestedContainers() { return backend.nestedContainers; },
    get defaultContainer() { return backend.defaultContainer; },
    get maxObjectBytes() { return backend.maxObjectBytes; },
    ensureContainer: (container, opts) => backend.ensureContainer(container, counted(opts)),
    list: (container, prefix, opts) => backend.list(container, prefix, counted(opts)),
    put: (container, name, data, opts) => backend.put(container, name, data, counted(opts)),
    putPieces: (container, name, data, opts) => backend.putPieces(container, name, data, counted(opts)),
    readRange: (container, name, offset, length, opts) => backend.readRange(container, name, offset, length, counted(opts)),
    get: (container, name, opts) => backend.get(container, name, counted(opts)),
    exists: (container, name, opts) => backend.exists(container, name, counted(opts)),
    delete: (container, name, opts) => backend.delete(container, name, counted(opts)),
    flush: (container, opts) => backend.flush(container, counted(opts)),
    ...(sweep ? { sweep: (container: string, prefix: string, opts?: CallOptions) => sweep(container, prefix, counted(opts)) } : {}),
    close: () => backend.close(),
  };
  return { backend: view, retries: () => retries };
}

/**
 * `data` in memory of its own. Objects may be views of shared memory that worker threads
 * fill and that is reused once the write returns; HTTP clients refuse shared memory.
 */
export function ownMemory(data: Uint8Array): Uint8Array {
  return data.buffer instanceof SharedArrayBuffer ? new Uint8Array(data) : data;
}
