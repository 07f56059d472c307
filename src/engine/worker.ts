/** Worker-thread entry: runs chunk-work jobs posted by WorkerPool. */
import { parentPort } from 'node:worker_threads';
import { ChunkvaultError } from '../errors.js';
import { processBackupChunk, processRestoreObject, type BackupChunkJob, type RestoreObjectJob } from './chunk-work.js';
import { postWithTransfer } from './transfer.js';

parentPort!.on('message', async ({ seq, job }: { seq: number; job: BackupChunkJob | RestoreObjectJob }) => {
  try {
    const result = job.kind === 'backup' ? await processBackupChunk(job) : await processRestoreObject(job);
    const views: Uint8Array[] = 'extents' in result ? [result.hashes, ...result.extents.map((e) => e.data)] : [];
    postWithTransfer(parentPort!, { seq, result }, views);
  } catch (err) {
    const e = err as Error;
    parentPort!.postMessage({
      seq,
      error: {
        name: e.name,
        message: e.message,
        context: err instanceof ChunkvaultError ? { ...err.context, cause: undefined } : {},
      },
    });
  }
});
