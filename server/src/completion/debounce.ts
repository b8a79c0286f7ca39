/**
 * Adaptive debounce: how long to wait after a keystroke before asking the model.
 *
 * During a typing burst (keystrokes on average less than BURST_MS apart) the next keystroke is likely to come
 * within about one interval and would cancel the work, so the wait follows the rhythm: 1.5 × the moving average of
 * the interval between requests, at least the base setting. Slower typing, a pause, or a Tab acceptance gets the
 * base wait: an answer is then likely to be seen, and cancelling a generation costs at most one token anyway.
 */
export class AdaptiveDebounce {
  static readonly BURST_MS = 250;
  /** Weight of the newest interval in the exponential moving average. */
  static readonly ALPHA = 0.3;
  private lastAt: number | undefined;
  private averageMs: number | undefined;

  constructor(public baseMs: number) {}

  /** Records a request at time `now` (ms) and returns the delay to apply to it. */
  next(now: number): number {
    if (this.lastAt !== undefined) {
      // A gap of seconds is a pause, not typing speed; clamp so one pause does not dominate the average for long.
      const interval = Math.min(now - this.lastAt, 4 * AdaptiveDebounce.BURST_MS);
      this.averageMs = this.averageMs === undefined ? interval : AdaptiveDebounce.ALPHA * interval + (1 - AdaptiveDebounce.ALPHA) * this.averageMs;
    }
    this.lastAt = now;
    return this.delayMs();
  }

  delayMs(): number {
    if (this.averageMs === undefined || this.averageMs >= AdaptiveDebounce.BURST_MS) return this.baseMs;
    return Math.round(Math.max(this.baseMs, 1.5 * this.averageMs));
  }

  get averageIntervalMs(): number | undefined {
    return this.averageMs;
  }
}
