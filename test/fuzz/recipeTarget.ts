/**
 * The fuzz target of the recipe parser (issue 15): one input = the text of a `*.mixq.toml`. Used by the
 * coverage-guided fuzzer (scripts/fuzz-recipe.mjs, run by scripts/fuzz.sh as fuzz_recipe) and by the regression test
 * that replays the seed corpus and every input that once failed (test/recipe-fuzz.test.ts).
 *
 * checkRecipe(text) throws FuzzFailure when the parser breaks a promise the server relies on:
 *  - analyzeRecipe never throws (a syntax error is a diagnostic), whatever the text;
 *  - every diagnostic and entry range lies inside the document (LSP clients reject others), start before end;
 *  - a recipe without error diagnostics gives settings (fromRecipe) whose values the quantizer accepts: method,
 *    group size, rounding, propagate from their lists, samples ≥ 1, seq_len ≥ 2 and seed ≥ 0 as safe integers, boolean
 *    flags as booleans, absolute paths; a recipe with errors is refused with RecipeError, nothing else;
 *  - completion and hover at the start, the middle and the end of lines spread over the document (12 at most) do
 *    not throw, and a hover's range lies inside the document.
 * Files are not consulted (checkFiles: false): the fuzzer must not read the paths its inputs name.
 */
import * as path from 'node:path';

import type * as analyzeModule from '../../server/src/recipe/analyze';
import type * as featuresModule from '../../server/src/recipe/features';
import type * as settingsModule from '../../server/src/recipe/settings';
import { serverModule } from '../helpers';

const { analyzeRecipe } = serverModule<typeof analyzeModule>('recipe/analyze');
const { recipeCompletions, recipeHover } = serverModule<typeof featuresModule>('recipe/features');
const { fromRecipe, RecipeError } = serverModule<typeof settingsModule>('recipe/settings');

export class FuzzFailure extends Error {}

const RECIPE_PATH = '/fuzz/recipes/input.mixq.toml';

interface Pos { line: number; character: number }
interface Rng { start: Pos; end: Pos }

function fail(what: string): never {
  throw new FuzzFailure(what);
}

function checkRange(lines: readonly string[], r: Rng, what: string): void {
  const inside = (p: Pos): boolean =>
    Number.isInteger(p.line) && Number.isInteger(p.character) && p.line >= 0 && p.line < lines.length && p.character >= 0 && p.character <= lines[p.line].length;
  if (!inside(r.start) || !inside(r.end)) fail(`${what}: range ${JSON.stringify(r)} is outside the document (${lines.length} lines)`);
  if (r.start.line > r.end.line || (r.start.line === r.end.line && r.start.character > r.end.character)) fail(`${what}: range ${JSON.stringify(r)} ends before it starts`);
}

const isSafeAtLeast = (x: unknown, min: number): boolean => typeof x === 'number' && Number.isSafeInteger(x) && x >= min;

function checkSettings(text: string, analysis: analyzeModule.RecipeAnalysis): void {
  const hasErrors = analysis.diagnostics.some((d) => d.severity === 'error');
  let s: settingsModule.QuantizeSettings;
  try {
    s = fromRecipe(analysis, RECIPE_PATH, '/fuzz/workspace', { source: '/fuzz/src', output: '/fuzz/out' });
  } catch (e) {
    if (!(e instanceof RecipeError)) fail(`fromRecipe threw ${(e as Error).name}: ${(e as Error).message}`);
    if (!hasErrors && analysis.values) fail(`fromRecipe refused a recipe without error diagnostics: ${(e as Error).message}`);
    return;
  }
  if (hasErrors) fail('fromRecipe accepted a recipe with error diagnostics');
  const bad: string[] = [];
  if (!['awq', 'rtn'].includes(s.method)) bad.push(`method ${String(s.method)}`);
  if (![32, 64, 128].includes(s.groupSize)) bad.push(`groupSize ${String(s.groupSize)}`);
  if (!['gptq', 'nearest'].includes(s.rounding)) bad.push(`rounding ${String(s.rounding)}`);
  if (!['quantized', 'float'].includes(s.propagate)) bad.push(`propagate ${String(s.propagate)}`);
  if (!isSafeAtLeast(s.samples, 1)) bad.push(`samples ${String(s.samples)}`);
  if (!isSafeAtLeast(s.seqLen, 2)) bad.push(`seqLen ${String(s.seqLen)}`);
  if (!isSafeAtLeast(s.seed, 0)) bad.push(`seed ${String(s.seed)}`);
  if (typeof s.overwrite !== 'boolean' || typeof s.zeroPoint !== 'boolean') bad.push(`overwrite ${String(s.overwrite)} zeroPoint ${String(s.zeroPoint)}`);
  for (const p of [s.source, s.output, s.calibPath]) if (typeof p !== 'string' || !path.isAbsolute(p)) bad.push(`path ${String(p)}`);
  if (bad.length > 0) fail(`settings of a recipe without errors that the quantizer cannot take: ${bad.join(', ')} (${JSON.stringify(text.slice(0, 200))})`);
}

function checkFeatures(text: string, lines: readonly string[]): void {
  const step = Math.max(1, Math.ceil(lines.length / 12));
  for (let line = 0; line < lines.length; line += step) {
    const len = lines[line].length;
    for (const character of new Set([0, len >> 1, len])) {
      recipeCompletions(text, { line, character });
      const hover = recipeHover(text, { line, character }) as { range?: Rng } | null;
      if (hover?.range) checkRange(lines, hover.range, `hover at ${line}:${character}`);
    }
  }
}

export function checkRecipe(text: string): void {
  const lines = text.split(/\r?\n/);
  let analysis: analyzeModule.RecipeAnalysis;
  try {
    analysis = analyzeRecipe(text, RECIPE_PATH, { checkFiles: false });
  } catch (e) {
    fail(`analyzeRecipe threw ${(e as Error).name}: ${(e as Error).message}`);
  }
  for (const d of analysis.diagnostics) checkRange(lines, d.range, `diagnostic "${d.message}"`);
  for (const e of analysis.entries) {
    checkRange(lines, e.keyRange, `key range of ${e.key}`);
    if (e.valueRange) checkRange(lines, e.valueRange, `value range of ${e.key}`);
  }
  checkSettings(text, analysis);
  checkFeatures(text, lines);
}
