// Recipe pieces without a server: the starter recipe is valid against the schema (only its placeholder source
// is reported), the grammar's key list is the schema's and its patterns compile, did-you-mean, progress lines.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as quantizeTextModule from '../../extension/src/quantizeText';
import type * as analyzeModule from '../../server/src/recipe/analyze';
import type * as schemaModule from '../../server/src/recipe/schema';
import type * as settingsModule from '../../server/src/recipe/settings';
import { repoRoot, serverModule, tinyModelDir } from '../helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { starterRecipe, progressMessage, defaultOutputFor } = require(path.join(repoRoot, 'out', 'extension', 'quantizeText')) as typeof quantizeTextModule;
const { analyzeRecipe } = serverModule<typeof analyzeModule>('recipe/analyze');
const { RECIPE_KEYS, didYouMean } = serverModule<typeof schemaModule>('recipe/schema');
const { fromRecipe } = serverModule<typeof settingsModule>('recipe/settings');

test('the starter recipe: every key, valid but for its placeholder source; with a real source it resolves to the defaults', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-starter-'));
  try {
    const file = path.join(dir, 'q.mixq.toml');
    const a = analyzeRecipe(starterRecipe(), file);
    assert.deepEqual(a.diagnostics.map((d) => [d.range.start.line, d.message]), [[4, `source: ${path.join(dir, 'models', 'my-mixtral')} not found`]]);
    const present = a.entries.filter((e) => !e.isHeader).map((e) => `${e.section}.${e.key}`);
    const commentedOut = ['calibration.path'];
    assert.deepEqual(present.sort(), RECIPE_KEYS.map((k) => `${k.section}.${k.name}`).filter((k) => !commentedOut.includes(k) && k !== '.modules_to_not_convert').sort());

    const real = starterRecipe(tinyModelDir, 'out');
    const s = fromRecipe(analyzeRecipe(real, file), file, '/work/ws');
    assert.deepEqual(s, {
      source: tinyModelDir, output: path.join(dir, 'out'), overwrite: false, method: 'awq', groupSize: 128, zeroPoint: true, rounding: 'gptq',
      propagate: 'quantized', calibPath: '/work/ws', samples: 128, seqLen: 512, seed: 0,
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the TextMate grammar names exactly the schema\'s keys and tables, and its patterns compile', () => {
  const grammar = JSON.parse(fs.readFileSync(path.join(repoRoot, 'syntaxes', 'mixq-recipe.tmLanguage.json'), 'utf8')) as {
    scopeName: string; repository: Record<string, { match?: string; begin?: string; end?: string; patterns?: { match?: string; begin?: string; end?: string }[] }>;
  };
  assert.equal(grammar.scopeName, 'source.mixq-recipe');
  const keys = /\(\?:\(([^)]*)\)/.exec(grammar.repository.keyValue.begin!)![1].split('|').sort();
  assert.deepEqual(keys, [...new Set(RECIPE_KEYS.map((k) => k.name))].sort());
  assert.match(grammar.repository.table.match!, /\(calibration\|quant\)/);
  const all = Object.values(grammar.repository).flatMap((r) => [r, ...(r.patterns ?? [])]);
  for (const r of all) for (const re of [r.match, r.begin, r.end]) if (re) assert.doesNotThrow(() => new RegExp(re), re);
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { contributes: { languages: { id: string; filenamePatterns: string[] }[] } };
  assert.deepEqual(pkg.contributes.languages.find((l) => l.id === 'mixq-recipe')?.filenamePatterns, ['*.mixq.toml']);
});

test('did-you-mean and the progress line', () => {
  assert.equal(didYouMean('grop_size', ['group_size', 'method']), 'group_size');
  assert.equal(didYouMean('quantize', ['calibration', 'quant']), 'quant');
  assert.equal(didYouMean('colour', ['group_size', 'method']), undefined);
  const p = { jobId: 1, source: '/m', output: '/o', phase: 'search-moe', layer: 1, layers: 32, fraction: 0.04, elapsedS: 500, etaS: 7200 };
  assert.equal(progressMessage(p), 'layer 2 of 32 · search-moe · ETA 2.0 h');
  assert.equal(progressMessage({ ...p, etaS: -1, phase: 'load', layer: 0 }), 'layer 1 of 32 · load');
  assert.equal(progressMessage({ ...p, phase: 'calibration' }), 'building the calibration set…');
  assert.equal(defaultOutputFor('/m/mixtral/', 'awq', 64), '/m/mixtral-awq-int4-g64');
});
