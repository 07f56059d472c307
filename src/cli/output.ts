/** Human output: sizes, tables and a progress bar on stderr. */
import type { ProgressEvent } from '../engine/progress.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '-';
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) (v /= 1024), u++;
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${UNITS[u]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

/** Parses `8388608`, `8M`, `8MiB`, `32K`, `1G` (binary multiples). */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new Error(`invalid size '${text}' (expected bytes, or a number with K, M or G)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * mult;
}

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '--';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** A one-line progress bar redrawn in place on a TTY, at most every 100 ms. */
export class ProgressBar {
  private last = 0;
  private drawn = false;
  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  update = (e: ProgressEvent): void => {
    const now = Date.now();
    if (e.reason !== 'end' && now - this.last < 100) return;
    this.last = now;
    const width = 30;
    const pct = e.percent;
    const filled = pct === undefined ? 0 : Math.round((pct / 100) * width);
    const bar = pct === undefined ? '?'.repeat(width) : '#'.repeat(filled) + '.'.repeat(width - filled);
    const eta = pct && e.bytesPerSecond > 0 && e.bytesTotal !== undefined
      ? formatDuration((e.bytesTotal - e.bytesDone) / e.bytesPerSecond)
      : '--';
    const total = e.bytesTotal === undefined ? '?' : formatBytes(e.bytesTotal);
    const text = `${e.operation} [${bar}] ${pct === undefined ? '  ?  ' : pct.toFixed(1).padStart(5)}% ` +
      `${formatBytes(e.bytesDone)}/${total} ${formatRate(e.bytesPerSecond)} ETA ${eta}`;
    this.stream.write(`\r${text}\x1b[K`);
    this.drawn = true;
  };

  finish(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
