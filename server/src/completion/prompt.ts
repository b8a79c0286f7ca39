/**
 * Prompt building: the document around the cursor → token ids of a FIM (or prefix-only) prompt within token
 * budgets.
 *
 * Budgets. The prefix keeps whole lines ending at the cursor, the suffix whole lines starting at it; a single line
 * longer than the budget is cut at the token level (prefix: its start dropped; suffix: its end dropped).
 * The prefix's first line is rounded forward to a multiple of PREFIX_LINE_ALIGN, so that while the user types,
 * the start of the prompt (and with it the engine's KV cache) stays the same until ALIGN more lines are needed.
 */
import type { CompletionDocument, ContextProvider, ContextSnippet } from './context';
import { formatSnippets } from './context';
import type { FimTemplate } from './templates';

/** What prompt building needs from the tokenizer. */
export interface PromptTokenizer {
  /** Ids of `text` without special tokens (no BOS). */
  encode(text: string): number[];
  /** Id of a marker token by its vocabulary string, if present. */
  markerId(name: string): number | undefined;
  bosId: number | undefined;
}

export interface PromptBudget {
  maxPrefixTokens: number;
  maxSuffixTokens: number;
  /** Share of the prefix budget snippets from other files may use (0..1). */
  snippetShare: number;
}

export const PREFIX_LINE_ALIGN = 16;

export interface BuiltPrompt {
  ids: number[];
  /** The document text before/after the cursor that made it into the prompt (snippets excluded). */
  prefixText: string;
  suffixText: string;
  /** Line (of the request's text: a window of the document, ./window) where the prompt's prefix starts. */
  prefixStartLine: number;
  prefixTokens: number;
  suffixTokens: number;
  snippetTokens: number;
  /** The prefix / suffix did not fit whole and were cut. */
  prefixCut: boolean;
  suffixCut: boolean;
}

/** Sum of per-line token counts, an upper bound-ish estimate of the joined text's count (runs of "\n" merge). */
function lineTokens(tok: PromptTokenizer, line: string): number {
  return tok.encode(line + '\n').length;
}

/** Prefix text within `budget` tokens: whole lines from an aligned start, cut at token level if still too long. */
export function budgetPrefix(tok: PromptTokenizer, before: string, budget: number): { text: string; ids: number[]; startLine: number; cut: boolean } {
  const lines = before.split('\n');
  const cursorLine = lines.length - 1;
  // Walk back from the cursor line while the estimate fits.
  let used = tok.encode(lines[cursorLine]).length;
  let first = cursorLine;
  while (first > 0) {
    const cost = lineTokens(tok, lines[first - 1]);
    if (used + cost > budget) break;
    used += cost;
    first--;
  }
  let startLine = first;
  if (first > 0) startLine = Math.min(cursorLine, Math.ceil(first / PREFIX_LINE_ALIGN) * PREFIX_LINE_ALIGN);
  let text = lines.slice(startLine).join('\n');
  let ids = tok.encode(text);
  let cut = startLine > 0;
  if (ids.length > budget) {
    ids = ids.slice(ids.length - budget);
    cut = true;
    text = ''; // cut mid-line: the exact text is no longer a substring boundary we track
  }
  return { text, ids, startLine, cut };
}

/** Suffix text within `budget` tokens: whole lines from the cursor, cut at token level if still too long. */
export function budgetSuffix(tok: PromptTokenizer, after: string, budget: number): { text: string; ids: number[]; cut: boolean } {
  if (budget <= 0 || after.length === 0) return { text: '', ids: [], cut: after.length > 0 };
  const lines = after.split('\n');
  let used = tok.encode(lines[0]).length;
  let last = 0;
  while (last + 1 < lines.length) {
    const cost = lineTokens(tok, lines[last + 1]);
    if (used + cost > budget) break;
    used += cost;
    last++;
  }
  let text = lines.slice(0, last + 1).join('\n');
  if (last + 1 < lines.length) text += '\n';
  let ids = tok.encode(text);
  let cut = last + 1 < lines.length;
  if (ids.length > budget) {
    ids = ids.slice(0, budget);
    cut = true;
  }
  return { text, ids, cut };
}

export class PromptError extends Error {}

/** The last segment of a URI's path, decoded ("file:///w/src/a%20b.py" → "a b.py"): the current file's label. */
export function uriFileName(uri: string): string {
  const pathPart = uri.replace(/[?#].*$/, '');
  const name = pathPart.slice(pathPart.lastIndexOf('/') + 1);
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

/**
 * Snippets as repo-level file sections, then the current file's header (Qwen2.5/3-Coder's layout):
 *   <|file_sep|>label\ntext\n … <|file_sep|>current file name\n
 */
export function fileSections(tok: PromptTokenizer, fileSep: number, snippets: readonly ContextSnippet[], uri: string): number[] {
  const ids: number[] = [];
  for (const s of snippets) ids.push(fileSep, ...tok.encode(`${s.label}\n${s.text}\n`));
  ids.push(fileSep, ...tok.encode(`${uriFileName(uri)}\n`));
  return ids;
}

/**
 * Assembles the template's segments. Snippets from `providers` go in front of the prefix, as comments — or, when the
 * template has a file separator the vocabulary holds, in front of the whole prompt as file sections — within
 * `snippetShare` of the prefix budget (their tokens are taken from that budget).
 */
export function buildPrompt(
  tok: PromptTokenizer,
  template: FimTemplate,
  doc: CompletionDocument,
  budget: PromptBudget,
  providers: readonly ContextProvider[] = [],
): BuiltPrompt {
  const before = doc.text.slice(0, doc.offset);
  const after = doc.text.slice(doc.offset);

  const fileSep = template.fileSeparator === undefined ? undefined : tok.markerId(template.fileSeparator);
  let snippetIds: number[] = [];
  if (providers.length > 0 && budget.snippetShare > 0) {
    const snippetBudget = Math.floor(budget.maxPrefixTokens * budget.snippetShare);
    // ~3 characters per token for code: a first cut in characters, then checked in tokens.
    const snippets = providers.flatMap((p) => p.snippets(doc, snippetBudget * 3));
    snippets.sort((a, b) => b.score - a.score);
    while (snippets.length > 0) {
      snippetIds =
        fileSep === undefined ? tok.encode(formatSnippets(snippets, doc.languageId)) : fileSections(tok, fileSep, snippets, doc.uri);
      if (snippetIds.length <= snippetBudget) break;
      snippets.pop();
      snippetIds = [];
    }
  }
  // As file sections the snippets lead the whole prompt; as comments they lead the prefix.
  const leading = fileSep === undefined ? [] : snippetIds;
  const inPrefix = fileSep === undefined ? snippetIds : [];

  const prefix = budgetPrefix(tok, before, budget.maxPrefixTokens - snippetIds.length);
  const suffix = template.prefixOnly ? { text: '', ids: [], cut: after.length > 0 } : budgetSuffix(tok, after, budget.maxSuffixTokens);

  const ids = [...leading, ...assemblePrompt(tok, template, [...inPrefix, ...prefix.ids], suffix.ids)];
  return {
    ids,
    prefixText: prefix.text,
    suffixText: suffix.text,
    prefixStartLine: prefix.startLine,
    prefixTokens: prefix.ids.length,
    suffixTokens: suffix.ids.length,
    snippetTokens: snippetIds.length,
    prefixCut: prefix.cut,
    suffixCut: suffix.cut,
  };
}

/** The template's segments around the prefix and suffix ids (each piece encoded on its own, as FIM models are trained). */
export function assemblePrompt(tok: PromptTokenizer, template: FimTemplate, prefixIds: readonly number[], suffixIds: readonly number[]): number[] {
  const ids: number[] = [];
  for (const seg of template.segments) {
    switch (seg.kind) {
      case 'bos':
        if (tok.bosId !== undefined) ids.push(tok.bosId);
        break;
      case 'special': {
        const id = tok.markerId(seg.token);
        if (id === undefined) throw new PromptError(`template ${template.id}: token ${seg.token} is not in the vocabulary`);
        ids.push(id);
        break;
      }
      case 'literal':
        ids.push(...tok.encode(seg.text));
        break;
      case 'prefix':
        ids.push(...prefixIds);
        break;
      case 'suffix':
        ids.push(...suffixIds);
        break;
    }
  }
  return ids;
}
