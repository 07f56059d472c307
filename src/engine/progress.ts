/** A progress report of a long operation. */
export interface ProgressEvent {
  operation: 'backup' | 'restore' | 'verify';
  backupId: string;
  bytesDone: number;
  /** Unknown while reading a stream of unknown length. */
  bytesTotal: number | undefined;
  objectsDone: number;
  /** 0..100, from bytes; undefined when the total is unknown. */
  percent: number | undefined;
  elapsedSeconds: number;
  bytesPerSecond: number;
  /** What triggered it: every N objects, the timer, or the end. */
  reason: 'objects' | 'timer' | 'end';
}

export interface ProgressOptions {
  onProgress?: (event: ProgressEvent) => void;
  /** Emit after every this many objects (Cinder's backup_object_number_per_notification). */
  progressEveryObjects?: number;
  /** Also emit on a timer (Cinder's backup_timer_interval), in milliseconds; 0 disables it. */
  progressIntervalMs?: number;
}

/** Counts bytes and objects and reports them at Cinder's two cadences. */
export class ProgressReporter {
  private bytes = 0;
  private objects = 0;
  private sinceLast = 0;
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly operation: ProgressEvent['operation'],
    private readonly backupId: string,
    private total: number | undefined,
    private readonly opts: ProgressOptions,
  ) {
    const interval = opts.progressIntervalMs ?? 120_000;
    if (opts.onProgress && interval > 0) {
      this.timer = setInterval(() => this.emit('timer'), interval);
      this.timer.unref();
    }
  }

  add(bytes: number, objects: number): void {
    this.bytes += bytes;
    this.objects += objects;
    this.sinceLast += objects;
    if (this.sinceLast >= (this.opts.progressEveryObjects ?? 10)) {
      this.sinceLast = 0;
      this.emit('objects');
    }
  }

  get bytesDone(): number {
    return this.bytes;
  }

  get objectsDone(): number {
    return this.objects;
  }

  elapsedSeconds(): number {
    return (Date.now() - this.started) / 1000;
  }

  end(): void {
    this.stop();
    if (this.total === undefined) this.total = this.bytes;
    this.emit('end');
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private emit(reason: ProgressEvent['reason']): void {
    if (!this.opts.onProgress) return;
    const elapsed = this.elapsedSeconds();
    this.opts.onProgress({
      operation: this.operation,
      backupId: this.backupId,
      bytesDone: this.bytes,
      bytesTotal: this.total,
      objectsDone: this.objects,
      percent:
        this.total === undefined ? undefined : this.total === 0 ? 100 : Math.min(100, (this.bytes / this.total) * 100),
      elapsedSeconds: elapsed,
      bytesPerSecond: elapsed > 0 ? this.bytes / elapsed : 0,
      reason,
    });
  }
}
