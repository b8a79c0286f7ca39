/**
 * Quality filters of post-processing (./postprocess applies them; each is a pure function of its input, so the
 * streamed and the whole output agree):
 *   - repetition         a run of 1–8 lines that repeats the run just before it (a model stuck in a loop) is cut
 *                        before its second copy; decided as soon as the second copy's last line is complete;
 *   - closing brackets   a closer that closes a bracket the text after the cursor already closes (or the wrong kind
 *                        of bracket) ends the suggestion before it;
 *   - balance            a suggestion that leaves brackets of its own open is cut back to its last line where none were;
 *   - re-typing          a suggestion that, whitespace aside, only re-types what follows the cursor is dropped;
 *   - indentation        leading whitespace of the suggestion's lines is rewritten in the document's style (tabs or
 *                        N spaces).
 * Brackets are counted by a light lexer that skips string literals ('…' "…" `…` and Python's triple quotes) and line
 * comments (# and //); it does not know every language, so a wrong count only shortens a suggestion.
 */

const OPENERS = '([{';
const CLOSERS = ')]}';
const PAIR: Record<string, string> = { ')': '(', ']': '[', '}': '{' };

/** Where the light lexer is between characters. */
export interface LexState {
  /** The quote of the string literal we are in ('"""' / "'''" for Python's triple-quoted). */
  quote?: string;
  /** In a line comment (until the end of the line). */
  comment?: boolean;
}

export interface BracketScan {
  /** Openers not closed yet, innermost last. */
  open: string[];
  /** Closers that found no opener in the scanned text, in order. */
  unmatchedClosers: string[];
  /** Offset of the first closer that found no opener or the wrong one, if any. */
  firstUnmatched?: number;
  /** Offset of each opener still open (parallel to `open`). */
  openAt: number[];
  /** Lexer state at the end of the scanned text. */
  state: LexState;
}

/** Scans `text` from lexer state `start`; `onCloser` may stop the scan at a closer (returns true to stop). */
export function scanBrackets(
  text: string,
  start: LexState = {},
  onCloser?: (at: number, closer: string, open: readonly string[]) => boolean,
): BracketScan {
  const open: string[] = [];
  const openAt: number[] = [];
  const unmatchedClosers: string[] = [];
  let firstUnmatched: number | undefined;
  let quote = start.quote;
  let comment = start.comment ?? false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '\n') {
      comment = false;
      if (quote === '"' || quote === "'") quote = undefined; // plain string literals do not span lines
      continue;
    }
    if (comment) continue;
    if (quote !== undefined) {
      if (ch === '\\') {
        i++;
        continue;
      }
      if (text.startsWith(quote, i)) {
        i += quote.length - 1;
        quote = undefined;
      }
      continue;
    }
    if (ch === '#' || (ch === '/' && text[i + 1] === '/')) {
      comment = true;
      continue;
    }
    if (ch === '"' || ch === "'" || ch === '`') {
      const triple = ch !== '`' && text.startsWith(ch.repeat(3), i);
      quote = triple ? ch.repeat(3) : ch;
      if (triple) i += 2;
      continue;
    }
    if (OPENERS.includes(ch)) {
      open.push(ch);
      openAt.push(i);
    } else if (CLOSERS.includes(ch)) {
      if (onCloser?.(i, ch, open)) break;
      if (open.length > 0 && open[open.length - 1] === PAIR[ch]) {
        open.pop();
        openAt.pop();
      } else {
        if (open.length > 0) {
          // The wrong kind of closer: count it as unmatched, the opener stays open.
          firstUnmatched ??= i;
          continue;
        }
        unmatchedClosers.push(ch);
        firstUnmatched ??= i;
      }
    }
  }
  return { open, openAt, unmatchedClosers, firstUnmatched, state: { quote, comment } };
}

/** What the bracket filters need of the document around the cursor (computed once per request). */
export interface BracketContext {
  /** Openers before the cursor that are still open, innermost last. */
  open: string[];
  /** How many of those the text after the cursor closes (innermost first). */
  closedBySuffix: number;
  /** Lexer state at the cursor (inside a string literal, a comment). */
  state: LexState;
}

export function bracketContext(prefix: string, suffix: string): BracketContext {
  const before = scanBrackets(prefix);
  const after = scanBrackets(suffix, before.state);
  return { open: before.open, closedBySuffix: Math.min(before.open.length, after.unmatchedClosers.length), state: before.state };
}

/**
 * Offset in `text` of the first closer that closes a bracket the suffix closes already, or that does not match the
 * bracket it would close; undefined when there is none.
 */
export function excessCloserAt(text: string, ctx: BracketContext): number | undefined {
  const mayClose = ctx.open.length - ctx.closedBySuffix;
  let closedOuter = 0;
  let at: number | undefined;
  scanBrackets(text, ctx.state, (i, closer, open) => {
    if (open.length > 0) return false; // closes (or mismatches) one of the suggestion's own: balanceBrackets' job
    const target = ctx.open[ctx.open.length - 1 - closedOuter];
    if (closedOuter >= mayClose || target !== PAIR[closer]) {
      at = i;
      return true;
    }
    closedOuter++;
    return false;
  });
  return at;
}

/** Offset of the first closer in `text` that does not match the innermost of the text's own open brackets. */
function ownMismatchAt(text: string, state: LexState): number | undefined {
  let at: number | undefined;
  scanBrackets(text, state, (i, closer, open) => {
    if (open.length === 0 || open[open.length - 1] === PAIR[closer]) return false;
    at = i;
    return true;
  });
  return at;
}

/**
 * `text` with its own brackets balanced: cut before a closer of the wrong kind; when brackets it opened stay open at
 * its end, cut back to its last line end where none were open, or else before the first one left open.
 */
export function balanceBrackets(text: string, state: LexState = {}): string {
  const mismatch = ownMismatchAt(text, state);
  if (mismatch !== undefined) text = text.slice(0, mismatch).replace(/\s+$/, '');
  const scan = scanBrackets(text, state);
  if (scan.open.length === 0) return text;
  let lastBalancedLineEnd: number | undefined;
  for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', nl + 1)) {
    if (nl > 0 && scanBrackets(text.slice(0, nl), state).open.length === 0) lastBalancedLineEnd = nl;
  }
  const cut = lastBalancedLineEnd ?? scan.openAt[0];
  return text.slice(0, cut).replace(/\s+$/, '');
}

export interface RepetitionCut {
  /** Offset in the raw text of the "\n" before the second copy. */
  at: number;
  /** Lines in the repeated run. */
  period: number;
}

const MAX_PERIOD = 8;
/** A line of closing punctuation only (`}`, `);`) may legitimately follow an equal one. */
const TRIVIAL_LINE = /^[\s)\]};,]*$/;

/**
 * The first repetition in `raw` (its first line, when not blank, counts as `linePrefix +` it): scanning the complete lines in
 * order, the first line at which the last k non-blank lines equal the k before them (1 ≤ k ≤ 8). Cut before the
 * second copy. Depends only on the lines up to the one where it is found, so a streamed prefix decides it for good.
 */
export function repetitionCut(raw: string, linePrefix: string): RepetitionCut | undefined {
  const lines: Array<{ text: string; start: number }> = [];
  let start = 0;
  for (;;) {
    const nl = raw.indexOf('\n', start);
    if (nl < 0) break; // the last line is incomplete
    // The cursor's line takes part with what is before the cursor on it, once the suggestion adds to it: lines of
    // the document alone are not the suggestion's to repeat.
    const own = raw.slice(start, nl);
    const text = start === 0 && own.trim().length > 0 ? linePrefix + own : own;
    if (text.trim().length > 0) {
      lines.push({ text: text.replace(/\s+$/, ''), start });
      const m = lines.length;
      for (let k = 1; k <= Math.min(MAX_PERIOD, Math.floor(m / 2)); k++) {
        let same = true;
        for (let j = 0; j < k && same; j++) same = lines[m - 1 - j].text === lines[m - 1 - k - j].text;
        if (!same) continue;
        if (k === 1 && TRIVIAL_LINE.test(lines[m - 1].text)) continue;
        const secondCopy = lines[m - k].start;
        return { at: Math.max(0, secondCopy - 1), period: k };
      }
    }
    start = nl + 1;
  }
  return undefined;
}

/** Whitespace aside, `text` is the start of `following` (what is after the cursor). */
export function retypesFollowing(text: string, following: string): boolean {
  const compact = (s: string): string => s.replace(/\s+/g, '');
  const t = compact(text);
  return t.length > 0 && compact(following).startsWith(t);
}

/** How a document indents: a tab, or a number of spaces per level. */
export type IndentStyle = { tabs: true } | { tabs: false; spaces: number };

/** The document's indentation style from its lines; undefined when it has no indented lines. */
export function inferIndentStyle(text: string): IndentStyle | undefined {
  let tabLines = 0;
  let spaceLines = 0;
  const deltas = new Map<number, number>();
  let previous = 0;
  for (const line of text.split('\n')) {
    if (line.trim().length === 0) continue;
    const ws = /^[ \t]*/.exec(line)![0];
    if (ws.startsWith('\t')) tabLines++;
    else if (ws.length > 0) spaceLines++;
    if (!ws.includes('\t')) {
      const d = ws.length - previous;
      if (d > 0 && d <= 8) deltas.set(d, (deltas.get(d) ?? 0) + 1);
      previous = ws.length;
    }
  }
  if (tabLines === 0 && spaceLines === 0) return undefined;
  if (tabLines > spaceLines) return { tabs: true };
  let best = 0;
  let bestCount = 0;
  for (const [d, n] of deltas) if (n > bestCount || (n === bestCount && d < best)) [best, bestCount] = [d, n];
  return best > 0 ? { tabs: false, spaces: best } : undefined;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * Rewrites the leading whitespace of the lines after the first in the document's style: tabs ↔ spaces, and spaces
 * per level rescaled when the suggestion nests by a different step than the document (measured from the cursor
 * line's indentation `refWidth`, in spaces).
 */
export function normalizeIndentation(text: string, style: IndentStyle | undefined, refWidth: number): string {
  if (!style || !text.includes('\n')) return text;
  const lines = text.split('\n');
  const body = lines.slice(1).filter((l) => l.trim().length > 0);
  // The suggestion's own step: tabs count as one level; spaces by the gcd of their depths below the cursor line.
  const unit = style.tabs ? 4 : style.spaces;
  let spaceStep = 0;
  for (const l of body) {
    const ws = /^[ \t]*/.exec(l)![0];
    if (ws.includes('\t')) continue;
    const below = ws.length - (style.tabs ? 0 : refWidth);
    if (below > 0) spaceStep = gcd(spaceStep, below);
  }
  const rescale = !style.tabs && spaceStep > 0 && spaceStep !== style.spaces && [2, 4, 8].includes(spaceStep);
  const tabStep = style.tabs ? (spaceStep > 0 && [2, 4, 8].includes(spaceStep) ? spaceStep : 4) : unit;
  return lines
    .map((line, i) => {
      if (i === 0 || line.trim().length === 0) return line;
      const ws = /^[ \t]*/.exec(line)![0];
      const rest = line.slice(ws.length);
      if (style.tabs) {
        if (!ws.includes(' ')) return line;
        let width = 0;
        for (const ch of ws) width += ch === '\t' ? tabStep : 1;
        return '\t'.repeat(Math.floor(width / tabStep)) + ' '.repeat(width % tabStep) + rest;
      }
      let width = 0;
      for (const ch of ws) width += ch === '\t' ? style.spaces : 1;
      if (rescale && width > refWidth && (width - refWidth) % spaceStep === 0) {
        width = refWidth + ((width - refWidth) / spaceStep) * style.spaces;
      }
      return ' '.repeat(width) + rest;
    })
    .join('\n');
}
