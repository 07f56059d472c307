import type { BackendKind } from '../backends/backend.js';
import { InvalidInputError } from '../errors.js';

/** Cinder's DRIVER_VERSION; the only repository format version there is. */
export const FORMAT_VERSION = '1.0.0';

/** Container for a new backup when none is given (Cinder: posix `update_container_name`, swift/s3 default). */
export function defaultContainer(kind: BackendKind, backupId: string): string {
  if (kind === 'posix') return `${backupId.slice(0, 2)}/${backupId.slice(2, 4)}/${backupId}`;
  return 'volumebackups';
}

/** `YYYYmmddHHMMSS` in UTC, as `timeutils.utcnow().strftime(...)`. */
export function prefixTimestamp(t: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return (
    p(t.getUTCFullYear(), 4) + p(t.getUTCMonth() + 1) + p(t.getUTCDate()) +
    p(t.getUTCHours()) + p(t.getUTCMinutes()) + p(t.getUTCSeconds())
  );
}

/** Cinder's `_generate_object_name_prefix` for each driver family. */
export function objectPrefix(
  kind: BackendKind,
  p: { volumeId: string; backupId: string; timestamp: Date; availabilityZone?: string },
): string {
  const ts = prefixTimestamp(p.timestamp);
  if (kind === 'posix') return `volume_${p.volumeId}_${ts}_backup_${p.backupId}`;
  return `volume_${p.volumeId}/${ts}/az_${p.availabilityZone ?? 'nova'}_backup_${p.backupId}`;
}

/**
 * Volume and backup ids (and the service's container names) become parts of object names and
 * paths: letters, digits, dot, underscore or dash, starting with a letter or digit; at most 64,
 * so that every object name (and its temporary name) fits a 255-byte file name.
 */
export const IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkIdentifier(value: string, what: string): string {
  if (!IDENTIFIER.test(value)) {
    throw new InvalidInputError(
      `${what} '${value}' is not valid: use up to 64 letters, digits, dots, underscores or dashes, starting with a letter or digit`,
    );
  }
  return value;
}

/** `'%s-%05d' % (prefix, n)`, n from 1. */
export function dataObjectName(prefix: string, n: number): string {
  return `${prefix}-${String(n).padStart(5, '0')}`;
}

export const metadataObjectName = (prefix: string): string => `${prefix}_metadata`;
export const sha256ObjectName = (prefix: string): string => `${prefix}_sha256file`;

/** `str(datetime)` of a tz-aware UTC datetime: `2024-01-02 03:04:05+00:00` (microseconds only when non-zero). */
export function pythonDatetimeString(t: Date): string {
  const iso = t.toISOString(); // 2024-01-02T03:04:05.678Z
  const ms = t.getUTCMilliseconds();
  const base = iso.slice(0, 10) + ' ' + iso.slice(11, 19);
  return (ms ? `${base}.${String(ms * 1000).padStart(6, '0')}` : base) + '+00:00';
}

/**
 * Parses the `created_at` forms Cinder has written: `2024-01-02 03:04:05[.ffffff][+00:00]`,
 * with or without a zone, and ISO forms with `T`/`Z`.
 */
export function parsePythonDatetime(s: string): Date | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?$/.exec(s.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, se, frac, zone] = m;
  let ms = Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +se!, frac ? Math.floor(+frac.padEnd(6, '0') / 1000) : 0);
  if (zone && zone !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const z = zone.slice(1).replace(':', '');
    ms -= sign * (+z.slice(0, 2) * 60 + +z.slice(2, 4)) * 60_000;
  }
  return new Date(ms);
}
