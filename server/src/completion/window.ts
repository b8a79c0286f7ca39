/**
 * The part of a document a completion can use. Prompt building, post-processing and the context search only ever
 * read the text within a few thousand tokens of the cursor, so they get just that window: a completion in a 20 MB
 * document (one line or many) costs what it costs in a small one, and the event loop stays free.
 *
 * The window holds `maxPrefixTokens × maxTokenChars` characters before the cursor and `maxSuffixTokens ×
 * maxTokenChars` after it, plus one chunk: no token is longer than maxTokenChars characters, so the budgets cannot use
 * text outside it. Its ends are rounded outwards to multiples of WINDOW_CHUNK (the start then moved to the next line
 * start when one is near), so while the user types the window, and with it the prompt's start (and the engine's KV
 * cache), stays the same until the cursor crosses a chunk.
 */
export const WINDOW_CHUNK = 4096;
/** When the vocabulary does not say: longer than any code token of the models MixQ targets. */
export const DEFAULT_MAX_TOKEN_CHARS = 16;

export interface DocumentWindow {
  text: string;
  /** Cursor offset in `text`. */
  offset: number;
  /** Offset of `text` in the whole document (0: the window starts at the document's start). */
  start: number;
}

export function documentWindow(
  text: string,
  offset: number,
  maxPrefixTokens: number,
  maxSuffixTokens: number,
  maxTokenChars = DEFAULT_MAX_TOKEN_CHARS,
): DocumentWindow {
  const perToken = Math.max(1, Math.min(128, Math.ceil(maxTokenChars)));
  const before = Math.max(0, maxPrefixTokens) * perToken + WINDOW_CHUNK;
  const after = Math.max(0, maxSuffixTokens) * perToken + WINDOW_CHUNK;
  let start = offset > before ? Math.floor((offset - before) / WINDOW_CHUNK) * WINDOW_CHUNK : 0;
  const end = Math.min(text.length, Math.ceil((offset + after) / WINDOW_CHUNK) * WINDOW_CHUNK);
  if (start === 0 && end === text.length) return { text, offset, start: 0 };
  if (start > 0) {
    // Whole lines where possible (the prompt starts at a line start), but never skip to the cursor's line.
    const newline = text.indexOf('\n', start - 1);
    if (newline >= 0 && newline < offset && newline + 1 - start < WINDOW_CHUNK) start = newline + 1;
  }
  return { text: text.slice(start, end), offset: offset - start, start };
}
