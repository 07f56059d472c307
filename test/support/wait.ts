/** Waiting for a condition instead of for a time: a loaded machine takes as long as it takes. */
import { readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `check` until it returns something other than undefined, null or false, and returns
 * that; fails after `ms` (a bound for a hang, not a measure of speed), naming `what`.
 */
export async function waitFor<T>(what: string, check: () => T | undefined | null | false | Promise<T | undefined | null | false>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const got = await check();
    if (got !== undefined && got !== null && got !== false) return got;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Whether process `pid` has `file` open now (Linux: its /proc/<pid>/fd links). */
export function hasOpen(pid: number, file: string): boolean {
  const fds = `/proc/${pid}/fd`;
  const wanted = realpathSync(file);
  try {
    return readdirSync(fds).some((fd) => {
      try {
        return readlinkSync(`${fds}/${fd}`) === wanted;
      } catch {
        return false; // closed meanwhile
      }
    });
  } catch {
    return false; // not started yet, or gone
  }
}
