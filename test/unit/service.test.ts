import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as serviceModule from '../../server/src/completion/service';
import { serverModule } from '../helpers';
import { FakeModel } from './fake-model';

const { CompletionService } = serverModule<typeof serviceModule>('completion/service');

const settings: serviceModule.ServiceSettings = {
  maxTokens: 64, timeCapMs: 5000, debounceMs: 0, fimTemplate: 'auto', maxPrefixTokens: 1024, maxSuffixTokens: 256,
  stopSequences: [], contextFromOpenFiles: false, prefetch: false,
};

/** A request for a document with `|` at the cursor; `versions` maps uri → current version (tests edit it). */
function request(doc: string, version: number, versions: Map<string, number>, invoked = true): serviceModule.CompletionRequest {
  const offset = doc.indexOf('|');
  const uri = 'file:///t.py';
  versions.set(uri, version);
  return {
    uri, languageId: 'python', text: doc.replace('|', ''), offset, version, invoked,
    currentVersion: () => versions.get(uri),
  };
}

test('a suggestion is the post-processed continuation; the engine stops once the cut is final', async () => {
  const model = new FakeModel({ msPerToken: 1, continuation: () => 'return x + 1\n\ndef other():\n    pass\n' + 'y'.repeat(40) });
  const svc = new CompletionService(model, settings);
  assert.equal(svc.template.id, 'starcoder-spm');
  const out = await svc.complete(request('def f(x):\n    |', 1, new Map()));
  assert.equal(out.kind, 'suggestion');
  assert.equal(out.kind === 'suggestion' && out.text, 'return x + 1');
  assert.equal(out.kind === 'suggestion' && out.timing.stop, 'postprocess');
  // Stopped at the "d" of "def": far fewer tokens than the 64 allowed.
  const gen = model.generations[0].result!;
  assert.ok(gen.tokens.length <= 'return x + 1\n\nd'.length + 2, `generated ${gen.tokens.length}`);
  assert.equal(gen.stopReason, 'cancelled');
  assert.equal(svc.counters.completed, 1);
});

test('streamed tokens are detokenized incrementally: decoding work is linear in the generated tokens', async () => {
  const n = 400;
  const model = new FakeModel({ msPerToken: 0, continuation: () => 'x'.repeat(n + 10) });
  const svc = new CompletionService(model, { ...settings, maxTokens: n, timeCapMs: 60_000 });
  const out = await svc.complete(request('s = "|', 1, new Map()));
  const gen = model.generations[0].result!;
  assert.equal(gen.tokens.length, n);
  assert.equal(out.kind, 'suggestion');
  assert.equal(out.kind === 'suggestion' && out.text, model.decode(gen.tokens), 'the suggestion is the full decode');
  // Re-decoding every prefix would decode n(n+1)/2 = 80200 ids; the incremental detokenizer decodes a window of
  // the last chunk + the new token per token (the prompt's tokenization and the final decode add 2n at most).
  assert.ok(model.decodedIds <= 5 * n, `${model.decodedIds} ids decoded for ${n} tokens`);
  assert.ok(model.decodeCalls <= 2 * n + 4, `${model.decodeCalls} decode calls for ${n} tokens`);
});

test('a burst of edits + requests: all but the last are cancelled, one generation at a time, none left running', async () => {
  const model = new FakeModel({ msPerToken: 2, continuation: (p, m) => `# ${m.show(p).length}`.padEnd(30, '.') });
  const svc = new CompletionService(model, { ...settings, debounceMs: 20 });
  const versions = new Map<string, number>();
  let text = 'x = ';
  const pending: Promise<serviceModule.CompletionOutcome>[] = [];
  for (let v = 1; v <= 50; v++) {
    text += 'a';
    svc.documentChanged('file:///t.py');
    pending.push(svc.complete(request(text + '|', v, versions, false)));
    await new Promise((r) => setTimeout(r, v % 10 === 0 ? 40 : 1)); // some pauses let generations start
  }
  const outcomes = await Promise.all(pending);
  assert.equal(outcomes.filter((o) => o.kind === 'cancelled').length, 49);
  assert.equal(outcomes[49].kind, 'suggestion');
  assert.equal(svc.activeGenerations, 0);
  assert.equal(svc.pendingRequests, 0);
  assert.equal(model.maxRunning, 1);
  assert.equal(svc.counters.cancelled, 49);
  assert.equal(svc.counters.cancelledWaiting + svc.counters.cancelledGenerating, 49);
  assert.ok(svc.counters.cancelledGenerating >= 1, 'the pauses let some generations start, and they were stopped');
  for (const g of model.generations.slice(0, -1)) assert.equal(g.result!.stopReason, 'cancelled');
});

test('a new request cancels a running generation inside the engine within a token', async () => {
  const model = new FakeModel({ msPerToken: 5, continuation: () => 'z'.repeat(500) });
  const svc = new CompletionService(model, { ...settings, maxTokens: 400 });
  const versions = new Map<string, number>();
  const first = svc.complete(request('a = |', 1, versions));
  await new Promise((r) => setTimeout(r, 40));
  const second = svc.complete(request('a = |', 1, versions));
  const [a] = await Promise.all([first, second]);
  assert.deepEqual(a, { kind: 'cancelled', reason: 'superseded', stage: 'generating' });
  const stopped = model.generations[0].result!;
  assert.equal(stopped.stopReason, 'cancelled');
  assert.ok(stopped.tokens.length < 20, `${stopped.tokens.length} tokens after cancel`);
});

test('the time cap ends generation and keeps what was generated', async () => {
  const model = new FakeModel({ msPerToken: 10, continuation: () => 'q'.repeat(300) });
  const svc = new CompletionService(model, { ...settings, maxTokens: 300, timeCapMs: 60 });
  const out = await svc.complete(request('s = "|', 1, new Map()));
  assert.equal(out.kind, 'suggestion');
  if (out.kind !== 'suggestion') return;
  assert.equal(out.timing.stop, 'time_cap');
  assert.ok(out.text.length > 0 && out.text.length < 30, out.text);
});

test('forward cache hit while typing the suggestion; no new generation', async () => {
  const model = new FakeModel({ continuation: () => 'compute(a, b)\n' });
  const svc = new CompletionService(model, settings);
  const versions = new Map<string, number>();
  const first = await svc.complete(request('x = |', 1, versions));
  assert.equal(first.kind === 'suggestion' && first.text, 'compute(a, b)');
  const typed = await svc.complete(request('x = comp|', 2, versions));
  assert.equal(typed.kind === 'suggestion' && typed.text, 'ute(a, b)');
  assert.equal(typed.kind === 'suggestion' && typed.timing.fromCache, true);
  assert.equal(model.generations.length, 1);
  assert.equal(svc.counters.cacheHits, 1);
});

test('an answer computed for an older document version is dropped', async () => {
  const model = new FakeModel({ msPerToken: 3, continuation: () => 'abc\n' });
  const svc = new CompletionService(model, settings);
  const versions = new Map<string, number>();
  const pending = svc.complete(request('v = |', 1, versions));
  versions.set('file:///t.py', 2); // edited without the server hearing of it yet
  assert.deepEqual(await pending, { kind: 'cancelled', reason: 'stale', stage: 'done' });
  assert.equal(svc.counters.staleVersion, 1);
});

test('SPM + engine KV reuse: the next keystroke evaluates only the changed tail of the prompt', async () => {
  const model = new FakeModel({ continuation: () => '' });
  const svc = new CompletionService(model, settings);
  const versions = new Map<string, number>();
  const doc = 'import os\n\ndef main(argv):\n    return ar|\n\nmain([])\n';
  await svc.complete(request(doc, 1, versions));
  await svc.complete(request(doc.replace('ar|', 'arg|'), 2, versions));
  assert.equal(svc.last?.evaluatedPromptTokens, 1);
  assert.ok((svc.last?.reusedTokens ?? 0) > 40);
});

/** Continuation of the fake model: the first suggestion, then what follows once it is accepted. */
const twoStep = (prompt: number[], m: FakeModel) => (m.show(prompt).includes('compute(a, b)') ? '\nprint(x)\n' : 'compute(a, b)\n');

test('prefetch: the suggestion after accepting the shown one is computed ahead and served from the cache', async () => {
  const model = new FakeModel({ continuation: twoStep });
  const svc = new CompletionService(model, { ...settings, prefetch: true });
  const versions = new Map<string, number>();
  const first = await svc.complete(request('x = |', 1, versions));
  assert.equal(first.kind === 'suggestion' && first.text, 'compute(a, b)');
  while (svc.activeGenerations > 0 || model.generations.length < 2) await new Promise((r) => setTimeout(r, 2));
  // Tab: the document now holds the suggestion; the next request is answered from the cache.
  const next = await svc.complete(request('x = compute(a, b)|', 2, versions));
  assert.equal(next.kind === 'suggestion' && next.text, '\nprint(x)');
  assert.equal(next.kind === 'suggestion' && next.timing.stop, 'cache_exact');
  assert.deepEqual([svc.counters.requests, svc.counters.prefetchHits], [2, 1]);
  // The engine ran for the first request and the prefetches only: one for each suggestion shown.
  const prompts = model.generations.map((g) => model.show(g.req.prompt));
  assert.equal(prompts.length, 3);
  assert.ok(prompts[1].endsWith('x = compute(a, b)'));
  assert.ok(prompts[2].endsWith('x = compute(a, b)\nprint(x)'), 'the next prefetch follows the shown one');
  // The prefetch's prompt extends the first one: the engine reused its KV entries.
  const [a, b] = model.generations.map((g) => g.result!);
  assert.ok(b.reusedTokens >= a.promptTokens, `${b.reusedTokens} reused of ${b.promptTokens}`);
});

test('prefetch: a request for its state waits for it; a request for another state cancels it', async () => {
  const model = new FakeModel({ msPerToken: 8, continuation: twoStep });
  const svc = new CompletionService(model, { ...settings, prefetch: true });
  const versions = new Map<string, number>();
  await svc.complete(request('x = |', 1, versions));
  assert.equal(svc.activeGenerations, 1, 'the prefetch runs');
  svc.documentChanged('file:///t.py'); // the acceptance edit does not stop it
  const adopted = await svc.complete(request('x = compute(a, b)|', 2, versions));
  assert.equal(adopted.kind === 'suggestion' && adopted.timing.fromCache, true);
  const runs = (suffix: string) => model.generations.filter((g) => model.show(g.req.prompt).endsWith(suffix));
  assert.equal(runs('x = compute(a, b)').length, 1, 'the request waited for the prefetch instead of generating');

  await svc.complete(request('y = |', 3, versions)); // a new first suggestion → a new prefetch
  assert.equal(svc.activeGenerations, 1);
  const other = await svc.complete(request('y = 1|', 4, versions));
  assert.notEqual(other.kind, 'cancelled');
  const [prefetch] = runs('y = compute(a, b)');
  assert.equal(prefetch.result!.stopReason, 'cancelled', 'the prefetch yielded to the user\'s request');
  assert.equal(svc.counters.cancelled, 0, 'a cancelled prefetch is not a cancelled request');
});

test('prefetch: typing into the shown suggestion keeps the one prefetch for its acceptance running', async () => {
  const model = new FakeModel({ msPerToken: 8, continuation: twoStep });
  const svc = new CompletionService(model, { ...settings, prefetch: true });
  const versions = new Map<string, number>();
  await svc.complete(request('x = |', 1, versions));
  for (const [i, typed] of ['c', 'co', 'com'].entries()) {
    svc.documentChanged('file:///t.py');
    const hit = await svc.complete(request(`x = ${typed}|`, 2 + i, versions));
    assert.equal(hit.kind === 'suggestion' && hit.timing.stop, 'cache_forward');
  }
  const accepted = await svc.complete(request('x = compute(a, b)|', 9, versions));
  assert.equal(accepted.kind === 'suggestion' && accepted.text, '\nprint(x)');
  const forAcceptance = model.generations.filter((g) => model.show(g.req.prompt).endsWith('x = compute(a, b)'));
  assert.equal(forAcceptance.length, 1, 'one prefetch, not restarted per keystroke');
  assert.notEqual(forAcceptance[0].result?.stopReason, 'cancelled');
});

test('alternatives: an explicit trigger gets up to N different suggestions (greedy first, seeded samples deduplicated); typing gets one', async () => {
  // The fake "samples" by seed: seeds 1 and 3 give the same text as each other, seed 2 the greedy one's.
  const byseed = (seed: number | undefined): string => (seed === undefined ? 'return a' : ['', 'return b', 'return a', 'return b', 'return c'][seed]);
  const model = new FakeModel({ msPerToken: 0, continuation: (_p, m) => byseed(m.generations[m.generations.length - 1].req.seed) });
  const svc = new CompletionService(model, { ...settings, alternatives: 3 });
  const versions = new Map<string, number>();
  const typed = await svc.complete(request('def f(a):\n    |', 1, versions, false));
  assert.ok(typed.kind === 'suggestion' && typed.alternatives === undefined && typed.text === 'return a');
  assert.equal(model.generations.length, 1);

  // Invoked on the same state: the greedy one comes from the cache, the samples are computed (seeds 1, 2, 3, 4 tried
  // at most: 2 per wanted alternative) until 3 different ones are found.
  const invoked = await svc.complete(request('def f(a):\n    |', 1, versions, true));
  assert.equal(invoked.kind, 'suggestion');
  assert.deepEqual(invoked.kind === 'suggestion' && invoked.alternatives, ['return a', 'return b', 'return c']);
  const samples = model.generations.slice(1).map((g) => [g.req.greedy, g.req.seed]);
  assert.deepEqual(samples, [[false, 1], [false, 2], [false, 3], [false, 4]]);

  // Only one suggestion wanted: no sampling.
  svc.updateSettings({ ...settings, alternatives: 1 });
  const single = await svc.complete(request('def g(a):\n    |', 2, versions, true));
  assert.ok(single.kind === 'suggestion' && single.alternatives === undefined);
  assert.equal(model.generations.length, 6);
});
