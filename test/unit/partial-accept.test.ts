/** Partial accept (a word, a line) of a shown suggestion: the cache and the prefetch follow the accepted text. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as serviceModule from '../../server/src/completion/service';
import { serverModule } from '../helpers';
import { FakeModel } from './fake-model';

const { CompletionService } = serverModule<typeof serviceModule>('completion/service');

const settings: serviceModule.ServiceSettings = {
  maxTokens: 64, timeCapMs: 5000, debounceMs: 0, fimTemplate: 'auto', maxPrefixTokens: 1024, maxSuffixTokens: 256,
  stopSequences: [], contextFromOpenFiles: false, prefetch: true,
};

function request(doc: string, version: number, versions: Map<string, number>): serviceModule.CompletionRequest {
  const uri = 'file:///t.py';
  versions.set(uri, version);
  return { uri, languageId: 'python', text: doc.replace('|', ''), offset: doc.indexOf('|'), version, invoked: false, currentVersion: () => versions.get(uri) };
}

const twoStep = (prompt: number[], m: FakeModel) => (m.show(prompt).includes('total = compute(a, b)') ? '\nprint(total)\n' : 'compute(a, b)\n');

test('a word, then the rest of the line accepted: each next suggestion from the cache, one prefetch for the whole', async () => {
  const model = new FakeModel({ msPerToken: 8, continuation: twoStep });
  const svc = new CompletionService(model, settings);
  const versions = new Map<string, number>();
  const shown = await svc.complete(request('total = |', 1, versions));
  assert.equal(shown.kind === 'suggestion' && shown.text, 'compute(a, b)');

  // Ctrl+Right: "compute" inserted; the client tells the server, then VS Code asks at the new cursor.
  svc.documentChanged('file:///t.py');
  assert.equal(svc.partiallyAccepted(request('total = compute|', 2, versions)), true);
  const rest = await svc.complete(request('total = compute|', 2, versions));
  assert.deepEqual(rest.kind === 'suggestion' && [rest.text, rest.timing.stop], ['(a, b)', 'cache_exact']);

  // The line chord: the rest accepted; the suggestion after it comes from the prefetch that kept running.
  svc.documentChanged('file:///t.py');
  assert.equal(svc.partiallyAccepted(request('total = compute(a, b)|', 3, versions)), true, 'the prefetched state');
  const next = await svc.complete(request('total = compute(a, b)|', 3, versions));
  assert.equal(next.kind === 'suggestion' && next.text, '\nprint(total)');
  const forWhole = model.generations.filter((g) => model.show(g.req.prompt).endsWith('total = compute(a, b)'));
  assert.equal(forWhole.length, 1, 'one prefetch for accepting the whole suggestion, never restarted');
  assert.notEqual(forWhole[0].result?.stopReason, 'cancelled');
  assert.equal(svc.partialAccepts, 2);
  assert.equal(svc.counters.cancelled, 0);
});

test('an acceptance that matches no shown suggestion changes nothing', async () => {
  const model = new FakeModel({ continuation: () => 'compute(a, b)\n' });
  const svc = new CompletionService(model, { ...settings, prefetch: false });
  const versions = new Map<string, number>();
  await svc.complete(request('total = |', 1, versions));
  assert.equal(svc.partiallyAccepted(request('total = other|', 2, versions)), false);
  assert.equal(svc.partialAccepts, 0);
});
