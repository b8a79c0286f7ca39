/**
 * Local completion statistics, never sent anywhere: suggestions shown, accepted (Tab), partially accepted (a word or
 * a line), dismissed; per language; latency p50/p95 of the answers that showed a suggestion. Kept across restarts in
 * the extension's globalState (./statsView shows them). No vscode import: unit-tested in Node.
 *
 * What counts as what (the stable VS Code API reports acceptance through the item's command only):
 *   shown              a completion answer with a suggestion; typing into it, answered with its rest, is the same one;
 *   accepted           the item's command ran (VS Code runs it once a suggestion is accepted whole);
 *   partially accepted MixQ's accept-word/line commands inserted part of it;
 *   dismissed          a shown suggestion replaced by another or by none without having been (partially) accepted.
 */

export interface LanguageCounts {
  shown: number;
  accepted: number;
  partiallyAccepted: number;
  dismissed: number;
}

export interface StatsData {
  version: 1;
  /** When counting started (ms since the epoch). */
  since: number;
  byLanguage: Record<string, LanguageCounts>;
  /** Latency of the most recent shown suggestions, ms (at most MAX_LATENCIES). */
  latenciesMs: number[];
}

const MAX_LATENCIES = 1000;

export const emptyStats = (now: number): StatsData => ({ version: 1, since: now, byLanguage: {}, latenciesMs: [] });

/** The p-th percentile (0–100, nearest rank) of `values`; undefined when empty. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

interface Shown {
  uri: string;
  languageId: string;
  offset: number;
  text: string;
  /** Accepted in part or whole: not dismissed. */
  taken: boolean;
}

export class CompletionStats {
  private data: StatsData;
  private current: Shown | undefined;

  constructor(
    stored: unknown,
    private readonly save: (data: StatsData) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {
    const s = stored as StatsData | undefined;
    this.data = s && s.version === 1 && typeof s.byLanguage === 'object' && Array.isArray(s.latenciesMs) ? s : emptyStats(now());
  }

  private counts(languageId: string): LanguageCounts {
    return (this.data.byLanguage[languageId] ??= { shown: 0, accepted: 0, partiallyAccepted: 0, dismissed: 0 });
  }

  /** A completion answer for `uri` at `offset` (UTF-16) of `documentText`; `text` undefined: no suggestion. */
  answered(uri: string, languageId: string, offset: number, text: string | undefined, latencyMs: number, documentText: string): void {
    const cur = this.current;
    if (cur && text !== undefined && cur.uri === uri && offset > cur.offset) {
      const typed = documentText.slice(cur.offset, offset);
      if (cur.text.startsWith(typed) && cur.text.slice(typed.length) === text) {
        // Typed into (or partially accepted) the shown suggestion: the same one, its rest.
        this.current = { ...cur, offset, text };
        return;
      }
    }
    this.endCurrent();
    if (text === undefined) return;
    this.current = { uri, languageId, offset, text, taken: false };
    this.counts(languageId).shown++;
    this.data.latenciesMs.push(Math.round(latencyMs));
    if (this.data.latenciesMs.length > MAX_LATENCIES) this.data.latenciesMs.splice(0, this.data.latenciesMs.length - MAX_LATENCIES);
    this.save(this.data);
  }

  private endCurrent(): void {
    const cur = this.current;
    this.current = undefined;
    if (cur && !cur.taken) {
      this.counts(cur.languageId).dismissed++;
      this.save(this.data);
    }
  }

  accepted(languageId: string): void {
    this.counts(languageId).accepted++;
    if (this.current) this.current.taken = true;
    this.current = undefined;
    this.save(this.data);
  }

  partiallyAccepted(languageId: string): void {
    this.counts(languageId).partiallyAccepted++;
    if (this.current) this.current.taken = true;
    this.save(this.data);
  }

  reset(): void {
    this.data = emptyStats(this.now());
    this.current = undefined;
    this.save(this.data);
  }

  snapshot(): StatsData {
    return JSON.parse(JSON.stringify(this.data)) as StatsData;
  }

  totals(): LanguageCounts {
    const t: LanguageCounts = { shown: 0, accepted: 0, partiallyAccepted: 0, dismissed: 0 };
    for (const c of Object.values(this.data.byLanguage)) {
      t.shown += c.shown;
      t.accepted += c.accepted;
      t.partiallyAccepted += c.partiallyAccepted;
      t.dismissed += c.dismissed;
    }
    return t;
  }

  /** One line for the status-bar menu. */
  summaryLine(): string {
    const t = this.totals();
    const rate = t.shown > 0 ? ` (${Math.round((100 * t.accepted) / t.shown)}%)` : '';
    const p50 = percentile(this.data.latenciesMs, 50);
    return `${t.shown} shown, ${t.accepted} accepted${rate}, ${t.partiallyAccepted} partly` + (p50 !== undefined ? `, p50 ${p50} ms` : '');
  }

  /** The statistics as a Markdown report. */
  report(): string {
    const t = this.totals();
    const pct = (n: number, of: number): string => (of > 0 ? `${Math.round((100 * n) / of)}%` : '–');
    const lat = this.data.latenciesMs;
    const ms = (v: number | undefined): string => (v === undefined ? '–' : `${v} ms`);
    const rows = Object.entries(this.data.byLanguage)
      .sort((a, b) => b[1].shown - a[1].shown)
      .map(([lang, c]) => `| ${lang} | ${c.shown} | ${c.accepted} (${pct(c.accepted, c.shown)}) | ${c.partiallyAccepted} | ${c.dismissed} |`);
    return [
      '# MixQ statistics',
      '',
      `Kept on this machine only, since ${new Date(this.data.since).toISOString().slice(0, 16).replace('T', ' ')} UTC.`,
      '',
      '| language | shown | accepted | partially accepted | dismissed |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...rows,
      `| **all** | ${t.shown} | ${t.accepted} (${pct(t.accepted, t.shown)}) | ${t.partiallyAccepted} | ${t.dismissed} |`,
      '',
      `Latency of shown suggestions (last ${lat.length}): p50 ${ms(percentile(lat, 50))}, p95 ${ms(percentile(lat, 95))}.`,
      '',
    ].join('\n');
  }
}

/** The text a partial accept inserted at `offset`, when the edit from `before` to `after` is exactly one insertion there. */
export function insertedAt(before: string, after: string, offset: number): string | undefined {
  const n = after.length - before.length;
  if (n <= 0) return undefined;
  if (after.slice(0, offset) !== before.slice(0, offset) || after.slice(offset + n) !== before.slice(offset)) return undefined;
  return after.slice(offset, offset + n);
}
