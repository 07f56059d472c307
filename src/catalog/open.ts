import { CatalogError, ChunkvaultError, InvalidInputError } from '../errors.js';
import type { Catalog } from './catalog.js';
import { SqliteCatalog } from './sqlite.js';

/**
 * Opens a catalog: `postgres://…`/`postgresql://…` for PostgreSQL, otherwise a SQLite file path.
 * A SQLite file's directory must exist, unless `createDirectory` (the embedded default's place):
 * a mistyped path is an error, not a new empty catalog.
 */
export async function openCatalog(address: string, opts: { createDirectory?: boolean } = {}): Promise<Catalog> {
  const name = redactCatalogAddress(address);
  if (/^postgres(ql)?:\/\//i.test(address)) {
    // Loaded on demand: the embedded default never needs the PostgreSQL client.
    const { PostgresCatalog } = await import('./postgres.js');
    const catalog = await PostgresCatalog.open(address).catch((err: Error) => {
      throw new CatalogError(`cannot open catalog ${name}: ${err.message}`, { cause: err });
    });
    return guarded(catalog, name);
  }
  let catalog: SqliteCatalog;
  try {
    catalog = new SqliteCatalog(address, opts.createDirectory ?? false);
  } catch (err) {
    // A path that is no database, or that cannot be opened, is the caller's to fix.
    const code = (err as { code?: string }).code ?? '';
    const Kind = code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CANTOPEN') || code === 'EACCES' || code === 'ENOTDIR' || code === 'EEXIST' || code === 'ENOENT' ? InvalidInputError : CatalogError;
    throw new Kind(`cannot open catalog ${name}: ${(err as Error).message}`, { cause: err });
  }
  return guarded(catalog, name);
}

/** The address without its password, for messages. */
export function redactCatalogAddress(address: string): string {
  return address.replace(/^(postgres(?:ql)?:\/\/[^:/@]+):[^@]*@/i, '$1:***@');
}

/**
 * The catalog (and its job queue) with failures of the database itself (disk full, I/O
 * error, lost connection) turned into CatalogErrors that name it; chunkvault's own errors
 * (not found, conflict) pass as they are.
 */
function guarded<T extends object>(target: T, name: string): T {
  const wrap = (err: unknown) =>
    err instanceof ChunkvaultError ? err : new CatalogError(`catalog ${name}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  const children = new Map<PropertyKey, object>();
  return new Proxy(target, {
    get(t, prop) {
      const value: unknown = Reflect.get(t, prop, t);
      if (typeof value === 'object' && value !== null && prop === 'jobs') {
        if (!children.has(prop)) children.set(prop, guarded(value, name));
        return children.get(prop);
      }
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        try {
          const result: unknown = value.apply(t, args);
          return result instanceof Promise ? result.catch((err: unknown) => { throw wrap(err); }) : result;
        } catch (err) {
          throw wrap(err);
        }
      };
    },
  });
}
