// `mixq complete` (the README's first command): one completion through the editor's pipeline, in a real process.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as modelModule from '../server/src/completion/model';
import type * as serviceModule from '../server/src/completion/service';
import type * as engineModule from '../server/src/engine';
import { cliPath, repoRoot, serverModule, tinyModelDir } from './helpers';
import { needsAddon } from './integration/lsp-client';

const example = path.join(repoRoot, 'docs', 'examples', 'config.py');

function mixq(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('complete --file docs/examples/config.py: the document with the suggestion in place, as the editor shows it', { skip: needsAddon }, async () => {
  const r = mixq('complete', '--model', tinyModelDir, '--device', 'cpu', '--file', example);
  assert.equal(r.code, 0, r.stderr);
  const source = fs.readFileSync(example, 'utf8');
  const [before, after] = source.split('<cursor>');
  assert.ok(r.stdout.startsWith(before + '⟦'), r.stdout);
  const suggestion = r.stdout.slice(before.length + 1, r.stdout.indexOf('⟧'));
  assert.ok(r.stdout.endsWith('⟧' + after), r.stdout);
  assert.ok(suggestion.length > 0);
  assert.match(r.stderr, /starcoder-spm prompt of \d+ tokens; \d+ generated, stop: \w+/);

  // The same as the completion service (the language server's pipeline) gives for that document.
  const { Engine } = serverModule<typeof engineModule>('engine');
  const { EngineCompletionModel } = serverModule<typeof modelModule>('completion/model');
  const { CompletionService } = serverModule<typeof serviceModule>('completion/service');
  const engine = await Engine.load(tinyModelDir, { device: 'cpu' });
  try {
    const svc = new CompletionService(new EngineCompletionModel(engine), {
      maxTokens: 64, timeCapMs: 60_000, debounceMs: 0, fimTemplate: 'auto', maxPrefixTokens: 1024, maxSuffixTokens: 256,
      stopSequences: [], contextFromOpenFiles: false, prefetch: false,
    });
    const text = before + after;
    const out = await svc.complete({ uri: 'file:///config.py', languageId: 'python', text, offset: before.length, version: 1, invoked: true, currentVersion: () => 1 });
    assert.equal(out.kind === 'suggestion' && out.text, suggestion);
  } finally {
    await engine.dispose();
  }
});

test('complete --json; usage errors exit 2', { skip: needsAddon }, () => {
  const r = mixq('complete', '--model', tinyModelDir, '--device', 'cpu', '--text', 'def add(a, b):\n    return <cursor>\n', '--json');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(out.template, 'starcoder-spm');
  assert.equal(typeof out.suggestion, 'string');
  assert.equal(mixq('complete', '--model', tinyModelDir).code, 2, 'neither --file nor --text');
  assert.equal(mixq('complete', '--model', tinyModelDir, '--file', 'a', '--text', 'b').code, 2);
});
