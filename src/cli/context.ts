/** What every command needs: the repository, the catalog, output mode and cancellation. */
import * as os from 'node:os';
import * as path from 'node:path';
import type { Backend } from '../backends/backend.js';
import { defaultRepositoryPath, openBackend } from '../backends/open.js';
import type { Catalog } from '../catalog/catalog.js';
import { openCatalog } from '../catalog/open.js';
import { CancelledError } from '../errors.js';
import type { ProgressOptions } from '../engine/progress.js';
import { ProgressBar } from './output.js';

export interface GlobalOptions {
  repo?: string;
  catalog?: string;
  json?: boolean;
  quiet?: boolean;
}

export function defaultCatalogPath(env: NodeJS.ProcessEnv = process.env): string {
  const dataHome = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(dataHome, 'chunkvault', 'catalog.db');
}

export interface Context {
  backend: Backend;
  catalog: Catalog;
  json: boolean;
  quiet: boolean;
  signal: AbortSignal;
  progress(): ProgressOptions & { done(): void };
  /** Human output on stdout (suppressed by --json and --quiet). */
  say(text: string): void;
  close(): Promise<void>;
}

let cancelledBy: CancelledError | undefined;

/** Why the command was cancelled (SIGINT/SIGTERM), if it was. */
export function cancellation(): CancelledError | undefined {
  return cancelledBy;
}

/**
 * Opens the repository and catalog named by options or the environment (CHUNKVAULT_REPO,
 * CHUNKVAULT_CATALOG), else the embedded defaults. SIGINT/SIGTERM cancel the operation.
 */
export async function openContext(opts: GlobalOptions): Promise<Context> {
  const backend = await openBackend(opts.repo ?? process.env.CHUNKVAULT_REPO ?? defaultRepositoryPath());
  const named = opts.catalog ?? process.env.CHUNKVAULT_CATALOG;
  const catalog = await openCatalog(named ?? defaultCatalogPath(), { createDirectory: named === undefined });
  const controller = new AbortController();
  let signals = 0;
  // Set once the command's work has ended (it is closing): a signal then cancels nothing.
  let ended = false;
  const onSignal = (sig: NodeJS.Signals) => {
    // The first cancels; the clean-up that follows (removing what was written, giving the record
    // its status) is asked once more to be left alone, and left only at the third.
    if (++signals === 2) {
      process.stderr.write(ended
        ? `chunkvault: the command has ended and is closing; ${sig} once more quits at once\n`
        : `chunkvault: still cleaning up after the cancel; ${sig} once more quits at once ` +
          '(then `chunkvault catalog rebuild` tidies up)\n');
    }
    if (signals >= 3) process.exit(130);
    if (signals > 1 || ended) return;
    cancelledBy = new CancelledError(`cancelled by ${sig}`);
    controller.abort(cancelledBy);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const json = !!opts.json;
  const quiet = !!opts.quiet;
  return {
    backend,
    catalog,
    json,
    quiet,
    signal: controller.signal,
    progress() {
      if (json || quiet || !process.stderr.isTTY) return { done() {} };
      const bar = new ProgressBar();
      return { onProgress: bar.update, progressEveryObjects: 1, progressIntervalMs: 250, done: () => bar.finish() };
    },
    say(text) {
      if (!json && !quiet) process.stdout.write(text + '\n');
    },
    async close() {
      // The signal handlers stay: a signal that lands after the work is done (while the catalog
      // closes) must not kill the process, which would turn a finished command into a signal death.
      ended = true;
      await catalog.close();
      await backend.close();
    },
  };
}
