/**
 * Language features of recipe files (`*.mixq.toml`, language id mixq-recipe): diagnostics, key and value
 * completion, hover documentation and the "Quantize with this recipe" CodeLens. Pure functions of the text and a
 * position (tested directly and over JSON-RPC); server.ts wires them in through registerQuantizeFeatures
 * (../jobs/register.ts).
 */
import {
  CompletionItemKind,
  DiagnosticSeverity,
  InsertTextFormat,
  MarkupKind,
  type CodeLens,
  type CompletionItem,
  type Diagnostic,
  type Hover,
  type Position,
} from 'vscode-languageserver/node';

import { analyzeRecipe, scanRecipe, type Range, type RecipeEntry } from './analyze';
import { findKey, keyMarkdown, keysOf, RECIPE_SECTIONS } from './schema';

export const RECIPE_LANGUAGE_ID = 'mixq-recipe';

export function isRecipe(uri: string, languageId: string | undefined): boolean {
  return languageId === RECIPE_LANGUAGE_ID || /\.mixq\.toml$/i.test(uri);
}

const SEVERITY = { error: DiagnosticSeverity.Error, warning: DiagnosticSeverity.Warning, information: DiagnosticSeverity.Information } as const;

export function recipeDiagnostics(text: string, recipePath: string): Diagnostic[] {
  return analyzeRecipe(text, recipePath).diagnostics.map((d) => ({
    range: d.range, severity: SEVERITY[d.severity], source: 'mixq', message: d.message, ...(d.suggestion ? { data: { suggestion: d.suggestion } } : {}),
  }));
}

const contains = (r: Range, p: Position): boolean =>
  (p.line > r.start.line || (p.line === r.start.line && p.character >= r.start.character)) &&
  (p.line < r.end.line || (p.line === r.end.line && p.character <= r.end.character));

/** The table a line is in: the last header above it ('' = top level). */
function sectionAt(entries: RecipeEntry[], line: number): string {
  let section = '';
  for (const e of entries) {
    if (e.keyRange.start.line >= line) break;
    if (e.isHeader) section = e.section;
  }
  return section;
}

function firstSentence(doc: string): string {
  const m = /^(.*?\.)(\s|$)/.exec(doc);
  return (m ? m[1] : doc).replace(/`/g, '');
}

/**
 * Completion at `pos`: after `key =`, the key's values (enum strings quoted, booleans, integers); on an empty or
 * partly typed key, the keys of the line's table not yet set (and the tables); after `[`, the table names.
 * Every item edits the range from the start of the typed word to the cursor.
 */
export function recipeCompletions(text: string, pos: Position): CompletionItem[] {
  const lines = text.split(/\r?\n/);
  const before = (lines[pos.line] ?? '').slice(0, pos.character);
  const entries = scanRecipe(text);
  const section = sectionAt(entries, pos.line);

  const header = /^\s*\[\s*([A-Za-z_]*)$/.exec(before);
  if (header) {
    const start = pos.character - header[1].length;
    return RECIPE_SECTIONS.map((s, i) => ({
      label: s.name, kind: CompletionItemKind.Module, detail: firstSentence(s.doc), sortText: String(i).padStart(2, '0'),
      documentation: { kind: MarkupKind.Markdown, value: s.doc },
      textEdit: { range: { start: { line: pos.line, character: start }, end: pos }, newText: s.name },
    }));
  }

  const value = /^\s*([A-Za-z0-9_-]+)\s*=\s*(\S*)$/.exec(before);
  if (value) {
    const key = findKey(section, value[1]);
    if (!key) return [];
    const start = pos.character - value[2].length;
    const range = { start: { line: pos.line, character: start }, end: pos };
    const options: (string | number | boolean)[] = key.type === 'boolean' ? [true, false] : key.type === 'stringArray' ? [] : [...(key.values ?? [])];
    if (key.type === 'stringArray') {
      return [{ label: '["gate"]', kind: CompletionItemKind.Value, detail: 'the router, always kept in 16 bits', textEdit: { range, newText: '["gate"]' } }];
    }
    return options.map((v, i) => {
      const literal = typeof v === 'string' ? JSON.stringify(v) : String(v);
      return {
        label: literal, kind: CompletionItemKind.EnumMember, sortText: String(i).padStart(2, '0'),
        detail: v === key.default ? 'default' : undefined,
        // Typed `"aw`: the edit replaces the opening quote too, so filtering on `"aw` matches `"awq"`.
        filterText: literal,
        textEdit: { range, newText: literal },
      };
    });
  }

  const word = /^\s*([A-Za-z0-9_-]*)$/.exec(before);
  if (!word) return [];
  const start = pos.character - word[1].length;
  const range = { start: { line: pos.line, character: start }, end: pos };
  const present = new Set(entries.filter((e) => !e.isHeader && e.section === section && e.keyRange.start.line !== pos.line).map((e) => e.key));
  const items: CompletionItem[] = keysOf(section)
    .filter((k) => !present.has(k.name))
    .map((k, i) => ({
      label: k.name, kind: CompletionItemKind.Property, detail: firstSentence(k.doc), sortText: String(i).padStart(2, '0'),
      documentation: { kind: MarkupKind.Markdown, value: keyMarkdown(k) },
      insertTextFormat: InsertTextFormat.PlainText,
      textEdit: { range, newText: `${k.name} = ` },
      // Open the value list right away where there is one.
      ...(k.values || k.type === 'boolean' ? { command: { title: 'Suggest', command: 'editor.action.triggerSuggest' } } : {}),
    }));
  const headersPresent = new Set(entries.filter((e) => e.isHeader).map((e) => e.section));
  RECIPE_SECTIONS.filter((s) => !headersPresent.has(s.name)).forEach((s, i) => items.push({
    label: `[${s.name}]`, kind: CompletionItemKind.Module, detail: firstSentence(s.doc), sortText: `9${i}`,
    documentation: { kind: MarkupKind.Markdown, value: s.doc },
    textEdit: { range, newText: `[${s.name}]` },
  }));
  return items;
}

/** Hover on a key (or its value): its documentation; on a table header: the table's. */
export function recipeHover(text: string, pos: Position): Hover | null {
  for (const e of scanRecipe(text)) {
    const onKey = contains(e.keyRange, pos);
    if (!onKey && !(e.valueRange && contains(e.valueRange, pos))) continue;
    if (e.isHeader) {
      const s = RECIPE_SECTIONS.find((x) => x.name === e.section);
      return s ? { contents: { kind: MarkupKind.Markdown, value: `**[${s.name}]**\n\n${s.doc}` }, range: e.keyRange } : null;
    }
    const k = findKey(e.section, e.key);
    if (!k) return null;
    return { contents: { kind: MarkupKind.Markdown, value: keyMarkdown(k) }, range: onKey ? e.keyRange : e.valueRange };
  }
  return null;
}

/** The command the client registers for the lens (arguments: [recipe URI]). */
export const QUANTIZE_WITH_RECIPE_COMMAND = 'mixq.quantizeWithRecipe';

/** One lens on the first line: "Quantize with this recipe", or why it cannot run yet. */
export function recipeCodeLenses(uri: string, text: string, recipePath: string, jobRunning: boolean): CodeLens[] {
  const errors = analyzeRecipe(text, recipePath).diagnostics.filter((d) => d.severity === 'error').length;
  const title = jobRunning
    ? 'Quantize with this recipe (a job is running)'
    : errors > 0 ? `Quantize with this recipe (fix ${errors} error${errors === 1 ? '' : 's'} first)` : 'Quantize with this recipe';
  return [{ range: { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } }, command: { title, command: QUANTIZE_WITH_RECIPE_COMMAND, arguments: [uri] } }];
}
