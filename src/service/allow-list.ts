/** The volumes and restore targets a service may open: configured paths and glob patterns. */
import { realpathSync } from 'node:fs';
import * as path from 'node:path';
import picomatch from 'picomatch';
import { InvalidInputError } from '../errors.js';

export class AllowList {
  private readonly match: (p: string) => boolean;

  constructor(readonly patterns: string[]) {
    for (const p of patterns) {
      if (!path.isAbsolute(p)) throw new InvalidInputError(`volume pattern '${p}' is not an absolute path`);
    }
    const m = patterns.length ? picomatch(patterns, { dot: true }) : () => false;
    this.match = (p) => m(p);
  }

  /**
   * Accepts an absolute, normalised path that a pattern allows, and whose real path (when it
   * exists here) is allowed too, so a symbolic link cannot lead outside the list.
   */
  check(what: string, p: string): string {
    if (!path.isAbsolute(p) || path.normalize(p) !== p || p.endsWith('/')) {
      throw new InvalidInputError(`${what} '${p}' must be an absolute, normalised path`);
    }
    if (!this.match(p)) throw new InvalidInputError(`${what} '${p}' is not in the service's allowed volumes`);
    let real: string | undefined;
    try {
      real = realpathSync(p);
    } catch {
      // A restore target may not exist yet: its directory must then resolve inside the list.
      try {
        real = path.join(realpathSync(path.dirname(p)), path.basename(p));
      } catch {
        real = undefined;
      }
    }
    if (real !== undefined && real !== p && !this.match(real)) {
      throw new InvalidInputError(`${what} '${p}' resolves to '${real}', which is not in the service's allowed volumes`);
    }
    return p;
  }
}
