/**
 * The few error kinds chunkvault raises. Each carries enough context (backup id, object
 * name, offset) for one clear line; the CLI maps the kind to an exit code.
 */
export interface ErrorContext {
  backupId?: string;
  object?: string;
  offset?: number;
  container?: string;
  cause?: unknown;
}

export class ChunkvaultError extends Error {
  readonly context: ErrorContext;
  readonly exitCode: number = 1;
  constructor(message: string, context: ErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = new.target.name;
    this.context = context;
  }
}

/** The user asked for something impossible or malformed (bad option, bad source). */
export class InvalidInputError extends ChunkvaultError {
  override readonly exitCode = 2;
}

/** The repository holds data that fails a check (format, length, MD5, SHA-256, listing). */
export class IntegrityError extends ChunkvaultError {
  override readonly exitCode = 3;
}

/** A backup, record or object that must exist does not. */
export class NotFoundError extends ChunkvaultError {
  override readonly exitCode = 4;
}

/** The operation conflicts with the catalog state (dependents, status). */
export class ConflictError extends ChunkvaultError {
  override readonly exitCode = 5;
}

/** A backend fault worth retrying (connection reset, timeout, 5xx, 429). */
export class TransientBackendError extends ChunkvaultError {
  override readonly exitCode = 6;
}

/** A backend fault retrying cannot fix (403, bad ETag, missing bucket). */
export class BackendError extends ChunkvaultError {
  override readonly exitCode = 6;
}

/** The catalog's database failed (disk full, I/O error, lost connection). */
export class CatalogError extends ChunkvaultError {
  override readonly exitCode = 6;
}

/** Reading the volume, writing the restore target or a temporary file failed (disk full, I/O error). */
export class VolumeIOError extends ChunkvaultError {
  override readonly exitCode = 7;
}

/** The operation was cancelled (signal, or the backup's record moved to `deleting`). */
export class CancelledError extends ChunkvaultError {
  override readonly exitCode = 130;
}
