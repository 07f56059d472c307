/** Which process holds a backup: records name it "host:pid", so another process can tell whether it still runs. */
import { hostname } from 'node:os';

/** This process, as records name it. */
export const THIS_PROCESS = `${hostname()}:${process.pid}`;

/**
 * Whether the process `holder` ("host:pid") still runs, or any of several separated by spaces
 * (the restorers of a backup); one on another host counts as alive.
 */
export function processAlive(holder: string | null): boolean {
  if (!holder) return false;
  if (holder.includes(' ')) return holder.split(' ').some(processAlive);
  const i = holder.lastIndexOf(':');
  if (holder.slice(0, i) !== hostname()) return true;
  try {
    process.kill(Number(holder.slice(i + 1)), 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
