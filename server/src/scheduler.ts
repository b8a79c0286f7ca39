/**
 * The one scheduler in front of the engine. The native engine runs one request at a time (a second concurrent
 * call is rejected), so every piece of model work — a completion, a prefetch, a perplexity run, a CLI generation —
 * is submitted here and runs in submission order. Nothing waits by blocking: a job is a promise-returning function,
 * the model itself runs in the addon's worker threads.
 *
 *   const scheduler = new Scheduler();
 *   const job = scheduler.submit({
 *     run: (ctx) => { const h = native.generate(req); ctx.onCancel(() => h.cancel()); return h.result; },
 *     cancelledBeforeStart: () => emptyResult,   // what `result` resolves to when cancelled while queued
 *     onStart: () => …,                          // left the queue (e.g. start a time cap now)
 *   });
 *   job.cancel();        // queued: dropped at once (never runs); running: its onCancel stop is called
 *   await job.result;
 *   scheduler.cancelAll(); await scheduler.idle();
 *
 * A job's result settles after the job has left the scheduler, so `busy` is false when the last result resolves,
 * and the next job has already been started when an earlier result's handlers run.
 */

/** What a running job can do. */
export interface RunContext {
  /** Registers how to stop the job's work (a native cancel); called at once when the job is already cancelled. */
  onCancel(stop: () => void): void;
  readonly cancelled: boolean;
}

export interface JobSpec<T> {
  run(ctx: RunContext): Promise<T>;
  /** The value of a job cancelled before it started (throw to reject instead). */
  cancelledBeforeStart(): T;
  /** Called as the job leaves the queue, before `run`. */
  onStart?(): void;
}

export type JobState = 'queued' | 'running' | 'done';

export interface ScheduledJob<T> {
  readonly result: Promise<T>;
  readonly state: JobState;
  /** Queued: dropped, `result` resolves with cancelledBeforeStart(). Running: its stop functions are called. */
  cancel(): void;
}

interface Entry {
  state: JobState;
  cancelled: boolean;
  readonly stops: Array<() => void>;
  /** Runs the job; resolves (never rejects) to the function that settles its result. */
  start(): Promise<() => void>;
  settleCancelled(): void;
}

export class Scheduler {
  private readonly queue: Entry[] = [];
  private running: Entry | undefined;
  /** Settles when the running job has ended and the next one (if any) has been started. */
  private runningDone: Promise<void> | undefined;

  /** True while a job runs or waits. */
  get busy(): boolean {
    return this.running !== undefined || this.queue.length > 0;
  }

  /** Jobs waiting (not counting the running one). */
  get queued(): number {
    return this.queue.length;
  }

  submit<T>(spec: JobSpec<T>): ScheduledJob<T> {
    let resolve!: (value: T) => void;
    let reject!: (e: unknown) => void;
    const result = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const entry: Entry = {
      state: 'queued',
      cancelled: false,
      stops: [],
      start: async () => {
        entry.state = 'running';
        const ctx: RunContext = {
          onCancel: (stop) => (entry.cancelled ? stop() : entry.stops.push(stop)),
          get cancelled() {
            return entry.cancelled;
          },
        };
        try {
          spec.onStart?.();
          const value = await spec.run(ctx);
          return () => resolve(value);
        } catch (e) {
          return () => reject(e);
        }
      },
      settleCancelled: () => {
        entry.state = 'done';
        try {
          resolve(spec.cancelledBeforeStart());
        } catch (e) {
          reject(e);
        }
      },
    };
    this.queue.push(entry);
    this.pump();
    return {
      result,
      get state() {
        return entry.state;
      },
      cancel: () => this.cancel(entry),
    };
  }

  /** Cancels the running job and every queued one. */
  cancelAll(): void {
    for (const entry of [...this.queue]) this.cancel(entry);
    if (this.running) this.cancel(this.running);
  }

  /** Resolves once nothing runs or waits. */
  async idle(): Promise<void> {
    while (this.runningDone) await this.runningDone;
  }

  private cancel(entry: Entry): void {
    if (entry.cancelled || entry.state === 'done') return;
    entry.cancelled = true;
    if (entry.state === 'running') {
      for (const stop of entry.stops.splice(0)) stop();
      return;
    }
    const i = this.queue.indexOf(entry);
    if (i >= 0) this.queue.splice(i, 1);
    entry.settleCancelled();
  }

  private pump(): void {
    if (this.running) return;
    const entry = this.queue.shift();
    if (!entry) return;
    this.running = entry;
    this.runningDone = entry.start().then((settle) => {
      entry.state = 'done';
      this.running = undefined;
      this.runningDone = undefined;
      this.pump();
      settle();
    });
  }
}
