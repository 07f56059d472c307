/** Answers that must not wait on a catalog that stopped answering (it may hang, not refuse). */

/** How long a health check or a metrics scrape waits for the catalog. */
export const CATALOG_CHECK_MS = 3000;

/**
 * `p`'s value, or `fallback` when it has not settled within `ms`; `p` goes on, and its late
 * outcome is dropped.
 */
export async function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<F>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
    timer.unref();
  });
  p.catch(() => {});
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
