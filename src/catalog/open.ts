import { BackendError } from '../errors.js';
import type { Catalog } from './catalog.js';
import { SqliteCatalog } from './sqlite.js';

/** Opens a catalog: `postgres://…`/`postgresql://…` for PostgreSQL, otherwise a SQLite file path. */
export async function openCatalog(address: string): Promise<Catalog> {
  if (/^postgres(ql)?:\/\//i.test(address)) {
    // Loaded on demand: the embedded default never needs the PostgreSQL client.
    const { PostgresCatalog } = await import('./postgres.js');
    return PostgresCatalog.open(address).catch((err: Error) => {
      throw new BackendError(`cannot open catalog ${redactCatalogAddress(address)}: ${err.message}`);
    });
  }
  return new SqliteCatalog(address);
}

/** The address without its password, for messages. */
export function redactCatalogAddress(address: string): string {
  return address.replace(/^(postgres(?:ql)?:\/\/[^:/@]+):[^@]*@/i, '$1:***@');
}
