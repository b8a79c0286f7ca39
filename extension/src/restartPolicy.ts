/**
 * When the language server dies: restart it, unless it died more than `maxRestarts` times within `windowMs`
 * (a crash loop: a broken model or addon would otherwise restart forever). No vscode import: unit-tested in Node.
 */
export interface CrashDecision {
  restart: boolean;
  /** Crashes within the window, this one included. */
  crashes: number;
}

export class RestartPolicy {
  private times: number[] = [];

  constructor(
    readonly maxRestarts = 3,
    readonly windowMs = 3 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  onCrash(): CrashDecision {
    const t = this.now();
    this.times = this.times.filter((x) => t - x < this.windowMs);
    this.times.push(t);
    return { restart: this.times.length <= this.maxRestarts, crashes: this.times.length };
  }

  /** A deliberate (re)start forgets earlier crashes. */
  reset(): void {
    this.times = [];
  }
}
