/** Bearer-token authentication, compared in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Role, Token } from './config.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

export class Authenticator {
  private readonly known: { name: string; role: Role; hash: Buffer }[];

  constructor(tokens: Token[]) {
    this.known = tokens.map((t) => ({ name: t.name, role: t.role, hash: digest(t.secret) }));
  }

  /** The caller behind an Authorization header, or undefined. Every token is compared, always. */
  identify(header: string | undefined): { name: string; role: Role } | undefined {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    // Hashing first gives equal-length inputs, so the comparison time says nothing about the token.
    const presented = digest(m?.[1] ?? '');
    let found: { name: string; role: Role } | undefined;
    for (const k of this.known) {
      if (timingSafeEqual(k.hash, presented) && m) found ??= { name: k.name, role: k.role };
    }
    return found;
  }
}
