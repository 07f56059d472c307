/**
 * Writing through O_DIRECT: on this class of machine buffered writes plus fsync burn a
 * core of kernel time at ~270 MB/s, O_DIRECT writes run 3-5x faster. O_DIRECT needs the
 * memory address, file offset and length aligned, so data is staged in an aligned buffer;
 * unaligned tails go through an ordinary descriptor. Where the filesystem refuses
 * O_DIRECT (tmpfs, some network filesystems), everything goes through the ordinary one.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

const ALIGN = 4096;
const STAGE_BYTES = 8 * 1024 * 1024;

/** An aligned window into a larger allocation (Node cannot allocate aligned memory itself). */
interface Stage {
  view: Buffer;
}

/** Finds, by trial writes to a scratch file, the offset at which `raw` is aligned for O_DIRECT. */
async function alignedView(dir: string, raw: Buffer, length: number): Promise<Buffer | undefined> {
  const scratch = path.join(dir, `.chunkvault-tmp-probe-${randomBytes(6).toString('hex')}`);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(scratch, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_DIRECT, 0o600);
    for (let off = 0; off < ALIGN; off += 16) {
      try {
        await fh.write(raw, off, ALIGN, 0);
        return raw.subarray(off, off + length);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') return undefined;
      }
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    await fh?.close().catch(() => {});
    await fsp.rm(scratch, { force: true }).catch(() => {});
  }
}

/** Aligned staging buffers shared by every writer on one filesystem directory. */
class StagePool {
  private readonly waiting: ((s: Stage) => void)[] = [];
  constructor(private readonly free: Stage[]) {}

  acquire(): Promise<Stage> {
    const s = this.free.pop();
    return s ? Promise.resolve(s) : new Promise((resolve) => this.waiting.push(resolve));
  }

  release(s: Stage): void {
    const next = this.waiting.shift();
    if (next) next(s);
    else this.free.push(s);
  }
}

const poolsByDir = new Map<string, Promise<StagePool | undefined>>();

/** Two aligned staging buffers per directory, probed once; undefined when O_DIRECT is refused. */
function stagePoolFor(dir: string): Promise<StagePool | undefined> {
  let p = poolsByDir.get(dir);
  if (!p) {
    p = (async () => {
      const stages: Stage[] = [];
      for (let i = 0; i < 2; i++) {
        const view = await alignedView(dir, Buffer.allocUnsafeSlow(STAGE_BYTES + ALIGN), STAGE_BYTES);
        if (!view) return undefined;
        stages.push({ view });
      }
      return new StagePool(stages);
    })();
    poolsByDir.set(dir, p);
  }
  return p;
}

/** Positional writes to one file, through O_DIRECT where possible. */
export class DirectWriter {
  private constructor(
    readonly fh: fsp.FileHandle,
    private readonly direct: { fh: fsp.FileHandle; stages: StagePool } | undefined,
  ) {}

  /** Opens `file` with `flags` (and a second, O_DIRECT descriptor when the filesystem allows it). */
  static async open(file: string, flags: number, mode = 0o644): Promise<DirectWriter> {
    const fh = await fsp.open(file, flags, mode);
    const stages = await stagePoolFor(path.dirname(path.resolve(file)));
    if (!stages) return new DirectWriter(fh, undefined);
    const direct = await fsp.open(file, (flags & ~(fsc.O_CREAT | fsc.O_EXCL | fsc.O_TRUNC)) | fsc.O_DIRECT).catch(() => undefined);
    return new DirectWriter(fh, direct && { fh: direct, stages });
  }

  /** Writes all of `data` at `position`. */
  async write(data: Uint8Array, position: number): Promise<void> {
    let off = 0;
    if (this.direct && position % ALIGN === 0) {
      const aligned = data.length - (data.length % ALIGN);
      while (off < aligned) {
        const n = Math.min(aligned - off, STAGE_BYTES);
        const s = await this.direct.stages.acquire();
        try {
          s.view.set(data.subarray(off, off + n));
          await writeFully(this.direct.fh, s.view.subarray(0, n), position + off);
        } finally {
          this.direct.stages.release(s);
        }
        off += n;
      }
    }
    if (off < data.length) await writeFully(this.fh, data.subarray(off), position + off);
  }

  async sync(): Promise<void> {
    await this.direct?.fh.datasync();
    await this.fh.sync();
  }

  async close(): Promise<void> {
    await this.direct?.fh.close().catch(() => {});
    await this.fh.close();
  }
}

async function writeFully(fh: fsp.FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let off = 0; off < data.length; ) {
    const { bytesWritten } = await fh.write(data, off, data.length - off, position + off);
    off += bytesWritten;
  }
}
