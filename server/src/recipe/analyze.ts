/**
 * A recipe's text → its values and diagnostics with exact ranges (0-based line/character, LSP-style).
 *
 *   const a = analyzeRecipe(text, '/work/q/tiny.mixq.toml');
 *   a.diagnostics   // [{ range, severity, message }] — empty when the recipe can run
 *   a.values        // the parsed TOML (smol-toml), undefined on a syntax error
 *   a.entries       // every `key = value` with the ranges of its key and value (completion, hover)
 *
 * smol-toml parses (and reports syntax errors with a line and column) but keeps no positions, so a small line
 * scanner finds where each key and value is; checks use the parsed value and the scanned range.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import type * as SmolToml from 'smol-toml' with { 'resolution-mode': 'import' };

// smol-toml's types are ESM-only; its package also ships a CommonJS build ("require" export), loaded here.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { parse: parseToml, TomlError } = require('smol-toml') as typeof SmolToml;

import { checkMixtralSource } from './source';
import { didYouMean, findKey, keysOf, RECIPE_KEYS, RECIPE_SECTIONS, type RecipeKey } from './schema';

export interface Position { line: number; character: number }
export interface Range { start: Position; end: Position }

export type Severity = 'error' | 'warning' | 'information';

export interface RecipeDiagnostic {
  range: Range;
  severity: Severity;
  message: string;
  /** The unknown key's suggested replacement (a quick fix could apply it). */
  suggestion?: string;
}

/** One `key = value` line (or a `[table]` header, with value undefined). */
export interface RecipeEntry {
  /** The table the key is in ('' = top level); for a header, its own name. */
  section: string;
  key: string;
  keyRange: Range;
  /** Source text of the value (comment and trailing space removed); for a multi-line array, all of it. */
  valueText?: string;
  valueRange?: Range;
  isHeader: boolean;
}

export interface RecipeAnalysis {
  values: Record<string, unknown> | undefined;
  entries: RecipeEntry[];
  diagnostics: RecipeDiagnostic[];
}

const range = (line: number, start: number, endLine: number, end: number): Range => ({ start: { line, character: start }, end: { line: endLine, character: end } });

/** Index of a `#` comment outside strings, or the line's length. */
function commentStart(line: string): number {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === '#') {
      return i;
    }
  }
  return line.length;
}

/** Bracket depth change of a value's text outside strings. */
function bracketDelta(text: string): number {
  let depth = 0;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '[' || c === '{') depth++;
    else if (c === ']' || c === '}') depth--;
  }
  return depth;
}

const unquote = (k: string): string => (/^(["']).*\1$/.test(k) ? k.slice(1, -1) : k);

/** Finds every table header and `key = value` with their ranges (tolerant of the errors smol-toml reports). */
export function scanRecipe(text: string): RecipeEntry[] {
  const lines = text.split(/\r?\n/);
  const entries: RecipeEntry[] = [];
  let section = '';
  for (let ln = 0; ln < lines.length; ln++) {
    const raw = lines[ln];
    const code = raw.slice(0, commentStart(raw));
    const header = /^(\s*)\[\[?\s*([^\]]*?)\s*\]\]?/.exec(code);
    if (header) {
      const name = unquote(header[2]);
      const start = code.indexOf(header[2], header[1].length);
      section = name;
      entries.push({ section: name, key: name, keyRange: range(ln, start, ln, start + header[2].length), isHeader: true });
      continue;
    }
    const kv = /^(\s*)((?:"[^"]*"|'[^']*'|[A-Za-z0-9_.\- ])+?)\s*=\s*/.exec(code);
    if (!kv) continue;
    const keyStart = kv[1].length;
    const keyText = kv[2];
    const parts = keyText.split('.').map((p) => unquote(p.trim()));
    const fullSection = [section, ...parts.slice(0, -1)].filter((s) => s !== '').join('.');
    const key = parts[parts.length - 1];
    const valueStart = kv[0].length;
    let valueText = code.slice(valueStart).trimEnd();
    let scanned = ln;
    let endLine = ln;
    let endChar = valueStart + valueText.length;
    let depth = bracketDelta(valueText);
    // A multi-line array: continue until its brackets close; the range ends with its last non-blank line.
    while (depth > 0 && scanned + 1 < lines.length) {
      scanned++;
      const next = lines[scanned].slice(0, commentStart(lines[scanned])).trimEnd();
      valueText += '\n' + next;
      depth += bracketDelta(next);
      if (next.length > 0) {
        endLine = scanned;
        endChar = next.length;
      }
    }
    entries.push({
      section: fullSection,
      key,
      keyRange: range(ln, keyStart, ln, keyStart + keyText.length),
      valueText,
      valueRange: range(ln, valueStart, endLine, endChar),
      isHeader: false,
    });
    ln = scanned;
  }
  return entries;
}

function typeName(v: unknown): string {
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'boolean') return 'a boolean';
  if (typeof v === 'number' || typeof v === 'bigint') return Number.isInteger(Number(v)) ? 'an integer' : 'a float';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date || (v !== null && typeof v === 'object' && 'isDate' in v)) return 'a date';
  if (v !== null && typeof v === 'object') return 'a table';
  return typeof v;
}

const expectedName: Record<RecipeKey['type'], string> = {
  string: 'a string', path: 'a string (a path)', integer: 'an integer', boolean: 'true or false', stringArray: 'an array of strings',
};

function typeMatches(k: RecipeKey, v: unknown): boolean {
  switch (k.type) {
    case 'string':
    case 'path':
      return typeof v === 'string';
    case 'integer':
      return (typeof v === 'number' && Number.isInteger(v)) || typeof v === 'bigint';
    case 'boolean':
      return typeof v === 'boolean';
    case 'stringArray':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
  }
}

const orList = (values: readonly (string | number)[]): string => {
  const shown = values.map((v) => (typeof v === 'string' ? `"${v}"` : String(v)));
  return shown.length <= 1 ? shown.join('') : `${shown.slice(0, -1).join(', ')} or ${shown[shown.length - 1]}`;
};

function lookup(values: Record<string, unknown>, section: string, key: string): unknown {
  const table = section === '' ? values : values[section];
  return table !== null && typeof table === 'object' ? (table as Record<string, unknown>)[key] : undefined;
}

/**
 * Parses and checks a recipe. `recipePath` resolves relative paths (source, output, calibration.path).
 * `checkFiles: false` leaves out the checks flags can change (required keys, the source folder, an existing
 * output, calibration data): `mixq quantize --recipe` checks the merged settings instead.
 */
export function analyzeRecipe(text: string, recipePath: string, opts: { checkFiles?: boolean } = {}): RecipeAnalysis {
  const entries = scanRecipe(text);
  const diagnostics: RecipeDiagnostic[] = [];
  const lines = text.split(/\r?\n/);
  let values: Record<string, unknown> | undefined;
  try {
    values = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    if (!(e instanceof TomlError)) throw e;
    const line = Math.max(0, e.line - 1);
    const col = Math.max(0, e.column - 1);
    const lineText = lines[line] ?? '';
    const end = Math.max(col + 1, lineText.slice(0, commentStart(lineText)).trimEnd().length);
    diagnostics.push({ range: range(line, Math.min(col, lineText.length), line, Math.min(end, lineText.length)), severity: 'error', message: `TOML syntax error: ${e.message.split('\n')[0]}` });
  }

  const sectionNames = RECIPE_SECTIONS.map((s) => s.name as string);
  for (const entry of entries) {
    if (entry.isHeader) {
      if (!sectionNames.includes(entry.section)) {
        const guess = didYouMean(entry.section, sectionNames);
        diagnostics.push({
          range: entry.keyRange, severity: 'error', suggestion: guess,
          message: `unknown table [${entry.section}]` + (guess ? `; did you mean [${guess}]?` : ` (tables: ${sectionNames.map((n) => `[${n}]`).join(', ')})`),
        });
      }
      continue;
    }
    if (entry.section !== '' && !sectionNames.includes(entry.section)) continue; // reported at its header
    const known = findKey(entry.section, entry.key);
    if (!known) {
      diagnostics.push(unknownKey(entry));
      continue;
    }
    if (!values || !entry.valueRange) continue;
    const v = lookup(values, entry.section, entry.key);
    if (v === undefined) continue;
    const where = entry.section ? `${entry.section}.${entry.key}` : entry.key;
    if (!typeMatches(known, v)) {
      diagnostics.push({ range: entry.valueRange, severity: 'error', message: `${where}: expected ${expectedName[known.type]}, got ${typeName(v)}` });
      continue;
    }
    const n = Number(v);
    if (known.name === 'group_size' && !known.values!.includes(n)) {
      diagnostics.push({ range: entry.valueRange, severity: 'error', message: `${where}: ${n} is not a valid group size (${orList(known.values!)})` });
    } else if (known.type === 'stringArray' && known.values) {
      const bad = (v as string[]).filter((x) => !known.values!.includes(x));
      if (bad.length > 0) diagnostics.push({ range: entry.valueRange, severity: 'error', message: `${where}: ${bad.map((b) => `"${b}"`).join(', ')} cannot be kept in 16 bits (only "gate", the router, which is always kept)` });
    } else if (known.values && !known.values.includes(typeof v === 'bigint' ? n : (v as string | number))) {
      diagnostics.push({ range: entry.valueRange, severity: 'error', message: `${where}: ${JSON.stringify(v)} is not ${orList(known.values)}` });
    } else if (known.min !== undefined && n < known.min) {
      diagnostics.push({ range: entry.valueRange, severity: 'error', message: `${where}: ${n} is below the minimum ${known.min}` });
    }
  }
  if (values) diagnostics.push(...crossChecks(values, entries, recipePath, diagnostics, opts.checkFiles !== false));
  diagnostics.sort((a, b) => a.range.start.line - b.range.start.line || a.range.start.character - b.range.start.character);
  return { values, entries, diagnostics };
}

function unknownKey(entry: RecipeEntry): RecipeDiagnostic {
  const here = keysOf(entry.section).map((k) => k.name);
  const where = entry.section ? ` in [${entry.section}]` : ' at the top level';
  const elsewhere = RECIPE_KEYS.find((k) => k.name === entry.key && k.section !== entry.section);
  if (elsewhere) {
    return {
      range: entry.keyRange, severity: 'error',
      message: `unknown key "${entry.key}"${where}: it belongs ${elsewhere.section ? `in [${elsewhere.section}]` : 'at the top level, before any table'}`,
    };
  }
  const normalized = entry.key.replace(/-/g, '_');
  const guess = here.includes(normalized) ? normalized : didYouMean(entry.key, here);
  return {
    range: entry.keyRange, severity: 'error', suggestion: guess,
    message: `unknown key "${entry.key}"${where}` + (guess ? `; did you mean "${guess}"?` : ` (keys: ${here.join(', ')})`),
  };
}

/** Checks across keys and (checkFiles) against the file system: required keys, the source folder, an existing output, calibration data. */
function crossChecks(values: Record<string, unknown>, entries: RecipeEntry[], recipePath: string, earlier: RecipeDiagnostic[], checkFiles: boolean): RecipeDiagnostic[] {
  const out: RecipeDiagnostic[] = [];
  const dir = path.dirname(recipePath);
  const entryOf = (section: string, key: string): RecipeEntry | undefined => entries.find((e) => !e.isHeader && e.section === section && e.key === key);
  const hasError = (e: RecipeEntry | undefined): boolean => !!e?.valueRange && earlier.some((d) => d.range === e.valueRange);
  const quant = (values.quant ?? {}) as Record<string, unknown>;
  if (quant.method === 'rtn') {
    for (const key of ['rounding', 'propagate']) {
      const e = entryOf('quant', key);
      if (e) out.push({ range: e.keyRange, severity: 'warning', message: `quant.${key} applies to method "awq" only; ignored with "rtn"` });
    }
  }
  const device = entryOf('', 'device');
  if (device?.valueRange && values.device === 'cuda') {
    out.push({ range: device.valueRange, severity: 'error', message: 'device: this build quantizes on the CPU only; use "cpu" or "auto"' });
  }
  if (!checkFiles) return out;
  const start = range(0, 0, 0, 0);
  for (const k of RECIPE_KEYS) {
    if (k.required && lookup(values, k.section, k.name) === undefined) {
      out.push({ range: start, severity: 'error', message: `missing required key "${k.name}" (${k.name === 'source' ? 'the 16-bit Mixtral folder to quantize' : 'the folder to write'})` });
    }
  }
  const source = entryOf('', 'source');
  if (source?.valueRange && typeof values.source === 'string' && !hasError(source)) {
    const reason = checkMixtralSource(path.resolve(dir, values.source));
    if (reason) out.push({ range: source.valueRange, severity: 'error', message: `source: ${reason}` });
  }
  const output = entryOf('', 'output');
  if (output?.valueRange && typeof values.output === 'string' && !hasError(output)) {
    const abs = path.resolve(dir, values.output);
    if (typeof values.source === 'string' && path.resolve(dir, values.source) === abs) {
      out.push({ range: output.valueRange, severity: 'error', message: 'output: the same folder as source' });
    } else if (fs.existsSync(abs)) {
      const empty = fs.statSync(abs).isDirectory() && fs.readdirSync(abs).length === 0;
      if (!fs.statSync(abs).isDirectory()) {
        out.push({ range: output.valueRange, severity: 'error', message: `output: ${abs} exists and is a file` });
      } else if (!empty && values.overwrite !== true) {
        out.push({ range: output.valueRange, severity: 'error', message: `output: ${abs} already exists; set overwrite = true to replace it (after the new model is complete)` });
      } else if (!empty) {
        out.push({ range: output.valueRange, severity: 'warning', message: `output: ${abs} exists and will be replaced when the job completes (overwrite = true)` });
      }
    }
  }
  const calibration = (values.calibration ?? {}) as Record<string, unknown>;
  const calibPath = entryOf('calibration', 'path');
  if (calibPath?.valueRange && typeof calibration.path === 'string' && !hasError(calibPath) && !fs.existsSync(path.resolve(dir, calibration.path))) {
    out.push({ range: calibPath.valueRange, severity: 'error', message: `calibration.path: ${path.resolve(dir, calibration.path)} not found` });
  }
  return out;
}
