// The recipe parser's fuzz target (test/fuzz/recipeTarget.ts) over its seed corpus, which also holds every input the
// fuzzer (scripts/fuzz-recipe.mjs) once failed on, named regression-*; plus those failures written out by hand.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as analyzeModule from '../server/src/recipe/analyze';
import { checkRecipe } from './fuzz/recipeTarget';
import { repoRoot, serverModule } from './helpers';

const corpus = path.join(repoRoot, 'native', 'fuzz', 'corpus', 'fuzz_recipe');

test('every seed and regression input of the recipe fuzz target keeps the parser\'s promises', () => {
  const names = fs.readdirSync(corpus).sort();
  assert.ok(names.some((n) => n.startsWith('regression-')) && names.length >= 6, names.join(', '));
  for (const name of names) checkRecipe(fs.readFileSync(path.join(corpus, name), 'utf8'));
});

test('fuzz find: an unclosed multi-line array followed by blank lines ends its range on its last non-blank line', () => {
  const { scanRecipe } = serverModule<typeof analyzeModule>('recipe/analyze');
  // Was: end {line 3, character 9}, past the end of the empty line 3 (the previous line's length carried over).
  const [entry] = scanRecipe('modules_to_not_convert = [\n  "gate",\n\n');
  assert.deepEqual(entry.valueRange, { start: { line: 0, character: 25 }, end: { line: 1, character: 9 } });
  checkRecipe('modules_to_not_convert = [\n  "gate",\n\n');
  // A closed array still ends at its bracket, and the next key is scanned after it.
  const entries = scanRecipe('m = [\n  "gate",\n]\nx = 1');
  assert.deepEqual(entries.map((e) => [e.key, e.valueRange]), [
    ['m', { start: { line: 0, character: 4 }, end: { line: 2, character: 1 } }],
    ['x', { start: { line: 3, character: 4 }, end: { line: 3, character: 5 } }],
  ]);
});
