/**
 * LRU cache of shown suggestions, keyed by document state, with "forwarding": while the user types the start of a
 * suggestion that is still on screen, the rest of it is served from here without asking the model.
 *
 * Key: document URI, cursor offset, the last PREFIX_WINDOW characters before the cursor and the first
 * SUFFIX_WINDOW after it. A forward hit: same URI and suffix window, the cursor moved right by k (0 < k < length of
 * the cached suggestion), and the k characters typed are the suggestion's first k (checked on the prefix window).
 */

export interface CacheKey {
  uri: string;
  offset: number;
  /** Document text before the cursor (only its last PREFIX_WINDOW chars are kept). */
  prefix: string;
  /** Document text after the cursor (only its first SUFFIX_WINDOW chars are kept). */
  suffix: string;
}

interface Entry {
  uri: string;
  offset: number;
  prefixWindow: string;
  suffixWindow: string;
  completion: string;
  storedAt: number;
  prefetched: boolean;
}

export interface CacheHit {
  text: string;
  /** 'exact': the same state; 'forward': the user typed the first `typed` characters of a cached suggestion. */
  kind: 'exact' | 'forward';
  typed: number;
  /** Stored by a prefetch (computed ahead for the state after accepting a suggestion). */
  prefetched: boolean;
}

export class CompletionCache {
  static readonly PREFIX_WINDOW = 2048;
  static readonly SUFFIX_WINDOW = 512;
  private readonly entries = new Map<string, Entry>();

  constructor(
    readonly capacity = 100,
    readonly ttlMs = 5 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  private static windows(key: CacheKey): { prefixWindow: string; suffixWindow: string } {
    return {
      prefixWindow: key.prefix.slice(-CompletionCache.PREFIX_WINDOW),
      suffixWindow: key.suffix.slice(0, CompletionCache.SUFFIX_WINDOW),
    };
  }

  private static mapKey(uri: string, offset: number, prefixWindow: string, suffixWindow: string): string {
    return `${uri}\u0000${offset}\u0000${prefixWindow}\u0000${suffixWindow}`;
  }

  /** The identity of a document state as the cache sees it (equal keys: an exact hit). */
  static stateKey(key: CacheKey): string {
    const { prefixWindow, suffixWindow } = CompletionCache.windows(key);
    return CompletionCache.mapKey(key.uri, key.offset, prefixWindow, suffixWindow);
  }

  /** Stores a non-empty suggestion for this state (most recently used). */
  put(key: CacheKey, completion: string, prefetched = false): void {
    if (completion.length === 0) return;
    const { prefixWindow, suffixWindow } = CompletionCache.windows(key);
    const k = CompletionCache.mapKey(key.uri, key.offset, prefixWindow, suffixWindow);
    this.entries.delete(k);
    this.entries.set(k, { uri: key.uri, offset: key.offset, prefixWindow, suffixWindow, completion, storedAt: this.now(), prefetched });
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  get(key: CacheKey): CacheHit | undefined {
    const { prefixWindow, suffixWindow } = CompletionCache.windows(key);
    const now = this.now();
    const exactKey = CompletionCache.mapKey(key.uri, key.offset, prefixWindow, suffixWindow);
    const exact = this.entries.get(exactKey);
    if (exact) {
      if (now - exact.storedAt > this.ttlMs) {
        this.entries.delete(exactKey);
      } else {
        this.touch(exactKey, exact);
        return { text: exact.completion, kind: 'exact', typed: 0, prefetched: exact.prefetched };
      }
    }
    // Newest first: the suggestion most recently shown is the one being typed over.
    const all = [...this.entries.entries()].reverse();
    for (const [k, e] of all) {
      if (now - e.storedAt > this.ttlMs) {
        this.entries.delete(k);
        continue;
      }
      if (e.uri !== key.uri || e.suffixWindow !== suffixWindow) continue;
      const typed = key.offset - e.offset;
      if (typed <= 0 || typed >= e.completion.length) continue;
      const typedText = e.completion.slice(0, typed);
      if (prefixWindow !== (e.prefixWindow + typedText).slice(-CompletionCache.PREFIX_WINDOW)) continue;
      this.touch(k, e);
      return { text: e.completion.slice(typed), kind: 'forward', typed, prefetched: e.prefetched };
    }
    return undefined;
  }

  clear(): void {
    this.entries.clear();
  }

  private touch(k: string, e: Entry): void {
    this.entries.delete(k);
    this.entries.set(k, e);
  }
}
