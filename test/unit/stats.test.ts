/** Local completion statistics (extension/src/stats.ts) and the partial-accept keybindings of package.json. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as statsModule from '../../extension/src/stats';
import { repoRoot } from '../helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { CompletionStats, insertedAt, percentile } = require(path.join(repoRoot, 'out', 'extension', 'stats')) as typeof statsModule;

test('percentiles by nearest rank', () => {
  assert.equal(percentile([], 50), undefined);
  const v = Array.from({ length: 100 }, (_, i) => 100 - i); // 1..100, unsorted
  assert.deepEqual([percentile(v, 50), percentile(v, 95), percentile(v, 100)], [50, 95, 100]);
  assert.equal(percentile([7], 95), 7);
});

test('shown, typed into, accepted, partially accepted, dismissed; per language; kept across restarts', () => {
  let saved: unknown;
  const stats = new CompletionStats(undefined, (d) => (saved = JSON.parse(JSON.stringify(d))), () => 0);
  const doc = 'x = ';
  stats.answered('file:///a.py', 'python', 4, 'compute(a, b)', 120, doc);
  // Typing "com" into it, answered with the rest: the same suggestion.
  stats.answered('file:///a.py', 'python', 7, 'pute(a, b)', 5, 'x = com');
  stats.accepted('python');
  stats.answered('file:///a.py', 'python', 20, 'print(x)', 200, doc.padEnd(20));
  stats.partiallyAccepted('python');
  stats.answered('file:///a.py', 'python', 26, 'x)', 3, 'x = '.padEnd(20) + 'print(');
  stats.answered('file:///b.js', 'javascript', 3, 'foo()', 80, 'a; ');
  stats.answered('file:///b.js', 'javascript', 9, undefined, 10, 'a; bar; ');
  const snap = stats.snapshot();
  assert.deepEqual(snap.byLanguage, {
    python: { shown: 2, accepted: 1, partiallyAccepted: 1, dismissed: 0 },
    javascript: { shown: 1, accepted: 0, partiallyAccepted: 0, dismissed: 1 },
  });
  assert.deepEqual(snap.latenciesMs, [120, 200, 80]);
  assert.deepEqual(saved, snap);
  // A restart: the stored data is read back.
  const again = new CompletionStats(saved);
  assert.deepEqual(again.totals(), { shown: 3, accepted: 1, partiallyAccepted: 1, dismissed: 1 });
  assert.equal(again.summaryLine(), '3 shown, 1 accepted (33%), 1 partly, p50 120 ms');
  const report = again.report();
  assert.match(report, /\| python \| 2 \| 1 \(50%\) \| 1 \| 0 \|/);
  assert.match(report, /p50 120 ms, p95 200 ms/);
  // Malformed stored data starts afresh.
  assert.deepEqual(new CompletionStats({ version: 9 }).totals(), { shown: 0, accepted: 0, partiallyAccepted: 0, dismissed: 0 });
});

test('the text a partial accept inserted', () => {
  assert.equal(insertedAt('x = \nrest', 'x = compute\nrest', 4), 'compute');
  assert.equal(insertedAt('x = ', 'x = ', 4), undefined);
  assert.equal(insertedAt('x = ', 'y = compute', 4), undefined, 'not an insertion at the cursor');
});

test('package.json: Ctrl+Right accepts a word, a chord a line, while a suggestion is shown; the commands are declared', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
    contributes: { keybindings: Array<{ command: string; key: string; when: string }>; commands: Array<{ command: string }> };
  };
  const key = (command: string) => pkg.contributes.keybindings.find((k) => k.command === command);
  assert.equal(key('mixq.acceptNextWord')?.key, 'ctrl+right');
  assert.match(key('mixq.acceptNextLine')?.key ?? '', /^ctrl\+k ctrl\+\w+$/);
  for (const k of pkg.contributes.keybindings) assert.match(k.when, /inlineSuggestionVisible/);
  const declared = new Set(pkg.contributes.commands.map((c) => c.command));
  for (const c of ['mixq.acceptNextWord', 'mixq.acceptNextLine', 'mixq.showStatistics', 'mixq.didAcceptCompletion']) assert.ok(declared.has(c), c);
});
