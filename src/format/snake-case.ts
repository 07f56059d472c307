/**
 * What users read (`--json` output, the API's job results) names fields in snake_case, as the
 * backup records and Cinder do; the engine's results are TypeScript objects in camelCase.
 */

const snakeName = (key: string): string => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** `value` with every object key (at any depth) in snake_case; other values as they are. */
export function snakeCaseKeys(value: object): Record<string, unknown>;
export function snakeCaseKeys(value: unknown): unknown;
export function snakeCaseKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snakeCaseKeys);
  if (value === null || typeof value !== 'object' || Object.getPrototypeOf(value) !== Object.prototype) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [snakeName(k), snakeCaseKeys(v)]));
}
