/**
 * Adaptive debounce: how long to wait after a keystroke before asking the model.
 *
 * While the user types fast, the next keystroke is likely to come soon and would cancel the work, so the wait
 * follows the typing rhythm: 1.5 × the moving average of the interval between requests, between the base setting
 * and MAX_MS. After a pause (average above MAX_MS) the base applies: a slow typist gets a quick answer.
 */
export class AdaptiveDebounce {
  static readonly MAX_MS = 1000;
  /** Weight of the newest interval in the exponential moving average. */
  static readonly ALPHA = 0.3;
  private lastAt: number | undefined;
  private averageMs: number | undefined;

  constructor(public baseMs: number) {}

  /** Records a request at time `now` (ms) and returns the delay to apply to it. */
  next(now: number): number {
    if (this.lastAt !== undefined) {
      // A gap of several seconds is a pause, not typing speed; clamp so one pause does not dominate.
      const interval = Math.min(now - this.lastAt, 4 * AdaptiveDebounce.MAX_MS);
      this.averageMs = this.averageMs === undefined ? interval : AdaptiveDebounce.ALPHA * interval + (1 - AdaptiveDebounce.ALPHA) * this.averageMs;
    }
    this.lastAt = now;
    return this.delayMs();
  }

  delayMs(): number {
    if (this.averageMs === undefined || this.averageMs > AdaptiveDebounce.MAX_MS) return this.baseMs;
    return Math.round(Math.min(AdaptiveDebounce.MAX_MS, Math.max(this.baseMs, 1.5 * this.averageMs)));
  }

  get averageIntervalMs(): number | undefined {
    return this.averageMs;
  }
}
