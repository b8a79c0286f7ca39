/**
 * Post-processing of a generated middle into the ghost text shown to the user.
 *
 * Rules (each proposes a cut position in the raw text; the earliest wins):
 *   1. stop sequences      cut at the first occurrence of any;
 *   2. single line         when non-space text sits right of the cursor, only the rest of the current line;
 *   3. block end           cut before the first line indented less than the cursor's line (the block ended), or,
 *                          when the cursor's line opens a block (ends with `:` `{` `(` `[`), before the first line
 *                          back at its indentation — a closing bracket line is kept and ends the suggestion;
 *   4. suffix repetition   cut before a line that equals the first non-blank line of the suffix (the model is
 *                          re-writing code that already follows);
 *   5. repetition          cut before the second copy of a run of 1–8 lines that repeats the run before it
 *                          (./filters: the model looping, e.g. the same three lines three times).
 * Then: trailing whitespace is trimmed; in single-line mode a copy of the text right of the cursor at the
 * suggestion's end is removed; the suggestion ends before a closing bracket that the text after the cursor closes
 * already (or of the wrong kind), and brackets it opens itself are balanced (./filters); a suggestion that is empty,
 * or that (whitespace aside) only re-types what follows the cursor, is dropped; last, the indentation of its lines is
 * rewritten in the document's style.
 *
 * Streaming: `final` says the cut cannot move any more as tokens are appended (the lines before the cut are
 * complete, a stop sequence is far enough from the end), so generation can stop there. Applying this function to
 * any prefix of the model output that is `final` gives the same text as applying it to the whole output.
 */

import {
  balanceBrackets,
  bracketContext,
  excessCloserAt,
  inferIndentStyle,
  normalizeIndentation,
  repetitionCut,
  retypesFollowing,
  type BracketContext,
  type IndentStyle,
} from './filters';

export interface PostprocessContext {
  /** Text of the cursor's line before the cursor. */
  linePrefix: string;
  /** Text of the cursor's line after the cursor. */
  lineSuffix: string;
  /** Document text after the cursor's line (from the next line on). */
  followingText: string;
  stopSequences: readonly string[];
  /** Brackets open at the cursor and those the text after it closes (no bracket filters without it). */
  brackets?: BracketContext;
  /** The document's indentation (no indentation rewriting without it). */
  indent?: IndentStyle;
}

export type CutRule = 'stop_sequence' | 'single_line' | 'block_end' | 'suffix_repeat' | 'repetition' | 'bracket';

export interface PostprocessResult {
  text: string;
  /** The earliest rule that cut the raw text, if any. */
  rule?: CutRule;
  /** More generated text cannot change `text`. */
  final: boolean;
  /** Why the suggestion is empty (when it is). */
  dropped?: 'empty' | 'repeats_suffix';
}

interface Cut {
  at: number;
  rule: CutRule;
  final: boolean;
}

function indentWidth(line: string): number {
  let w = 0;
  for (const ch of line) {
    if (ch === ' ') w += 1;
    else if (ch === '\t') w += 4;
    else break;
  }
  return w;
}

const isBlank = (s: string): boolean => s.trim().length === 0;

function stopSequenceCut(raw: string, stops: readonly string[]): Cut | undefined {
  let at = -1;
  let maxLen = 0;
  for (const s of stops) {
    if (s.length === 0) continue;
    maxLen = Math.max(maxLen, s.length);
    const i = raw.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  if (at < 0) return undefined;
  // An earlier match of a longer stop sequence can still complete only if it starts within maxLen-1 of the end.
  return { at, rule: 'stop_sequence', final: at <= raw.length - maxLen + 1 };
}

function singleLineCut(raw: string, ctx: PostprocessContext): Cut | undefined {
  if (isBlank(ctx.lineSuffix)) return undefined;
  const nl = raw.indexOf('\n');
  return nl >= 0 ? { at: nl, rule: 'single_line', final: true } : undefined;
}

/** Start offsets of each line of `raw` (line 0 continues the cursor's line). */
function lineStarts(raw: string): number[] {
  const starts = [0];
  for (let i = 0; i < raw.length; i++) if (raw[i] === '\n') starts.push(i + 1);
  return starts;
}

function blockEndCut(raw: string, ctx: PostprocessContext): Cut | undefined {
  const starts = lineStarts(raw);
  if (starts.length < 2) return undefined;
  const firstLine = raw.slice(0, starts[1] - 1);
  const cursorLine = ctx.linePrefix + firstLine;
  // Reference indentation: the cursor's line; for a blank line, what was typed so far.
  const ref = isBlank(ctx.linePrefix) && isBlank(firstLine) ? ctx.linePrefix.length : indentWidth(cursorLine);
  const opensBlock = /[:{([]\s*$/.test(cursorLine);
  for (let i = 1; i < starts.length; i++) {
    const end = i + 1 < starts.length ? starts[i + 1] - 1 : raw.length;
    const line = raw.slice(starts[i], end);
    if (isBlank(line)) continue; // indentation unknown until a non-space character arrives
    const indent = indentWidth(line);
    const lineStart = starts[i] - 1; // cut at the "\n" that ends the previous line
    if (indent < ref) return { at: lineStart, rule: 'block_end', final: true };
    if (opensBlock && indent === ref) {
      if (/^\s*[}\])]/.test(line)) {
        // The closing line is part of the block: keep it whole, the suggestion ends after it.
        const complete = i + 1 < starts.length;
        return complete ? { at: end, rule: 'block_end', final: true } : undefined;
      }
      return { at: lineStart, rule: 'block_end', final: true };
    }
  }
  return undefined;
}

function suffixRepeatCut(raw: string, ctx: PostprocessContext): Cut | undefined {
  const next = ctx.followingText.split('\n').find((l) => !isBlank(l));
  if (next === undefined) return undefined;
  const target = next.trim();
  const starts = lineStarts(raw);
  for (let i = 1; i < starts.length; i++) {
    const complete = i + 1 < starts.length;
    const line = raw.slice(starts[i], complete ? starts[i + 1] - 1 : raw.length);
    if (!complete) {
      // An incomplete line may still become the target: not final yet, but cut if it already equals it.
      if (line.trim() === target) return { at: starts[i] - 1, rule: 'suffix_repeat', final: false };
      continue;
    }
    if (line.trim() === target) return { at: starts[i] - 1, rule: 'suffix_repeat', final: true };
  }
  return undefined;
}

function repetitionRuleCut(raw: string, ctx: PostprocessContext): Cut | undefined {
  const r = repetitionCut(raw, ctx.linePrefix);
  return r ? { at: r.at, rule: 'repetition', final: true } : undefined;
}

export function postprocess(raw: string, ctx: PostprocessContext): PostprocessResult {
  const cuts = [
    stopSequenceCut(raw, ctx.stopSequences),
    singleLineCut(raw, ctx),
    blockEndCut(raw, ctx),
    suffixRepeatCut(raw, ctx),
    repetitionRuleCut(raw, ctx),
  ]
    .filter((c): c is Cut => c !== undefined)
    .sort((a, b) => a.at - b.at);
  const cut = cuts[0];
  let text = cut ? raw.slice(0, cut.at) : raw;
  let final = cut?.final ?? false;
  let rule = cut?.rule;

  text = text.replace(/\s+$/, '');
  if (!isBlank(ctx.lineSuffix)) {
    // One line with text right of the cursor: don't suggest a second copy of that text (e.g. a closing ")").
    const right = ctx.lineSuffix.trim();
    if (text.trimEnd().endsWith(right)) text = text.trimEnd().slice(0, -right.length).trimEnd();
  }
  if (ctx.brackets) {
    const closer = excessCloserAt(text, ctx.brackets);
    if (closer !== undefined) {
      text = text.slice(0, closer).replace(/\s+$/, '');
      rule = 'bracket';
      // Decided once the closer's line is complete (no earlier line can still change) and no stop sequence that
      // starts before it can still complete.
      const lineEnd = raw.indexOf('\n', closer);
      const maxStop = Math.max(1, ...ctx.stopSequences.map((s) => s.length));
      if (lineEnd >= 0 && raw.length >= lineEnd + maxStop - 1) final = true;
    }
    text = balanceBrackets(text, ctx.brackets.state);
  }
  if (isBlank(text)) return { text: '', rule, final, dropped: 'empty' };
  const following = (ctx.lineSuffix + '\n' + ctx.followingText).trimStart();
  if ((isBlank(ctx.linePrefix) && following.startsWith(text.trim())) || retypesFollowing(text, following)) {
    return { text: '', rule, final, dropped: 'repeats_suffix' };
  }
  text = normalizeIndentation(text, ctx.indent, indentWidth(ctx.linePrefix + text.split('\n', 1)[0]));
  return { text, rule, final };
}

/** Splits the document text at the cursor into what post-processing needs. */
export function postprocessContext(text: string, offset: number, stopSequences: readonly string[]): PostprocessContext {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1;
  let lineEnd = text.indexOf('\n', offset);
  if (lineEnd < 0) lineEnd = text.length;
  return {
    linePrefix: text.slice(lineStart, offset),
    lineSuffix: text.slice(offset, lineEnd),
    followingText: text.slice(Math.min(text.length, lineEnd + 1)),
    stopSequences,
    brackets: bracketContext(text.slice(0, offset), text.slice(offset)),
    indent: inferIndentStyle(text),
  };
}
