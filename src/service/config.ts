/**
 * Service configuration: a JSON file (`--config`) and the environment. Tokens may live in
 * the file or in CHUNKVAULT_API_TOKENS ("name:role:token,…"); they are never logged.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';

export type Role = 'admin' | 'reader';

const TokenEntry = z.strictObject({
  name: z.string().min(1),
  role: z.enum(['admin', 'reader']).default('admin'),
  token: z.string().min(16, 'tokens must be at least 16 characters').optional(),
  /** Read the token from this environment variable instead. */
  token_env: z.string().min(1).optional(),
});

const ConfigFile = z.strictObject({
  listen: z.string().optional(),
  repo: z.string().optional(),
  catalog: z.string().optional(),
  tokens: z.array(TokenEntry).default([]),
  /** Paths or glob patterns of the volumes and restore targets workers may open. */
  volumes: z.array(z.string().min(1)).default([]),
  lease_seconds: z.number().positive().optional(),
  shutdown_timeout_seconds: z.number().nonnegative().optional(),
});

export interface Token {
  name: string;
  role: Role;
  secret: string;
}

export interface ServiceConfig {
  host: string;
  port: number;
  repo?: string;
  catalog?: string;
  tokens: Token[];
  volumes: string[];
  leaseMs: number;
  shutdownTimeoutMs: number;
}

export const DEFAULT_PORT = 8776;

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[?([^\]]*)\]?:)?(\d+)$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new InvalidInputError(`listen address '${listen}' is not [host:]port`);
  return { host: m[1] || '127.0.0.1', port };
}

/** Reads the configuration file (if any), then the environment; command-line values win. */
export function loadConfig(
  file: string | undefined,
  over: { listen?: string; volumes?: string[]; leaseSeconds?: number; shutdownSeconds?: number } = {},
  env: NodeJS.ProcessEnv = process.env,
): ServiceConfig {
  let raw: unknown = {};
  if (file) {
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new InvalidInputError(`cannot read configuration ${file}: ${(err as Error).message}`);
    }
  }
  const parsed = ConfigFile.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InvalidInputError(`configuration ${file}: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  const c = parsed.data;
  const tokens: Token[] = [];
  for (const t of c.tokens) {
    const secret = t.token ?? (t.token_env ? env[t.token_env] : undefined);
    if (!secret) throw new InvalidInputError(`configuration ${file}: token '${t.name}' has neither token nor a set token_env`);
    tokens.push({ name: t.name, role: t.role, secret });
  }
  for (const entry of (env.CHUNKVAULT_API_TOKENS ?? '').split(',').filter(Boolean)) {
    const [name, role, ...rest] = entry.split(':');
    const secret = rest.join(':');
    if (!name || (role !== 'admin' && role !== 'reader') || secret.length < 16) {
      throw new InvalidInputError('CHUNKVAULT_API_TOKENS: expected name:admin|reader:token (token of 16+ characters), comma-separated');
    }
    tokens.push({ name, role, secret });
  }
  const volumes = [...c.volumes, ...(over.volumes ?? []), ...(env.CHUNKVAULT_VOLUMES ?? '').split(',').filter(Boolean)];
  const leaseSeconds = over.leaseSeconds ?? c.lease_seconds ?? 30;
  const shutdownSeconds = over.shutdownSeconds ?? c.shutdown_timeout_seconds ?? 30;
  if (!(leaseSeconds > 0)) throw new InvalidInputError(`lease must be a positive number of seconds, got ${leaseSeconds}`);
  if (!(shutdownSeconds >= 0)) throw new InvalidInputError(`shutdown timeout must be a number of seconds, got ${shutdownSeconds}`);
  return {
    ...parseListen(over.listen ?? env.CHUNKVAULT_LISTEN ?? c.listen ?? String(DEFAULT_PORT)),
    repo: c.repo,
    catalog: c.catalog,
    tokens,
    volumes,
    leaseMs: leaseSeconds * 1000,
    shutdownTimeoutMs: shutdownSeconds * 1000,
  };
}
