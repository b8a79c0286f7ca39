/** The client's vscode-free pieces: the crash-restart policy and the status bar rendering. */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as restartModule from '../../extension/src/restartPolicy';
import type * as statusModule from '../../extension/src/status';
import type * as protocol from '#protocol';
import { repoRoot } from '../helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const extensionModule = <T>(name: string): T => require(path.join(repoRoot, 'out', 'extension', name)) as T;
const { RestartPolicy } = extensionModule<typeof restartModule>('restartPolicy');
const { renderStatus } = extensionModule<typeof statusModule>('status');

test('crashes restart the server up to the limit within the window, then stop; old crashes age out', () => {
  let now = 0;
  const policy = new RestartPolicy(3, 60_000, () => now);
  assert.deepEqual([policy.onCrash(), policy.onCrash(), policy.onCrash()].map((d) => d.restart), [true, true, true]);
  assert.deepEqual(policy.onCrash(), { restart: false, crashes: 4 });
  // A minute later the loop is over: restart again.
  now = 61_000;
  assert.deepEqual(policy.onCrash(), { restart: true, crashes: 1 });
  policy.onCrash();
  policy.onCrash();
  policy.reset();
  assert.equal(policy.onCrash().crashes, 1);
});

const counters: protocol.CompletionCounters = {
  requests: 0, completed: 0, empty: 0, cacheHits: 0, cancelled: 0, cancelledWaiting: 0, cancelledGenerating: 0,
  staleVersion: 0, errors: 0, evaluatedTokens: 0, maxCancelToStopMs: 0, prefetched: 0, prefetchHits: 0,
};
const base: protocol.ServerStatus = { state: 'ready', activeGenerations: 0, pendingRequests: 0, counters, rssBytes: 100 * 2 ** 20, pid: 1 };
const model: protocol.ModelSummary = {
  path: '/m/mixq-tiny-code', name: 'mixq-tiny-code', description: 'mixtral 4 layers', device: 'cpu', quantization: 'none',
  template: 'starcoder-spm', contextLength: 4096,
};

test('status bar: model, device, last latency and tokens/s; states; click actions', () => {
  const ready = renderStatus({
    phase: 'running', enabled: true,
    server: { ...base, model, last: { totalMs: 85.4, waitMs: 20, prefillMs: 5, decodeMs: 55, otherMs: 5.4, promptTokens: 80, reusedTokens: 77, evaluatedPromptTokens: 3, generatedTokens: 20, tokensPerSec: 345.6, stop: 'postprocess', fromCache: false } },
  });
  assert.equal(ready.text, '$(sparkle) MixQ: mixq-tiny-code · cpu · 85 ms · 346 tok/s');
  assert.equal(ready.command, 'mixq.showMenu');
  assert.match(ready.tooltip, /3 evaluated \(77 reused\)/);
  assert.match(ready.tooltip, /Server memory: 100 MiB/);

  const noModel = renderStatus({ phase: 'running', enabled: true, server: { ...base, state: 'noModel', message: 'No model configured' } });
  assert.equal(noModel.text, '$(circle-slash) MixQ: no model');
  assert.equal(noModel.command, 'mixq.selectModel', 'clicking offers Select Model…');
  assert.equal(noModel.warning, true);

  const failed = renderStatus({ phase: 'running', enabled: true, server: { ...base, state: 'error', message: 'Could not load model /x: config.json: missing hidden_size' } });
  assert.equal(failed.text, '$(error) MixQ: model failed to load');
  assert.match(failed.tooltip, /missing hidden_size[\s\S]*Completions are off/);

  assert.equal(renderStatus({ phase: 'running', enabled: false, server: { ...base, model } }).text, '$(circle-slash) MixQ: mixq-tiny-code · cpu · off');
  assert.equal(renderStatus({ phase: 'running', enabled: true, server: { ...base, model, activeGenerations: 1 } }).text, '$(sparkle) MixQ: mixq-tiny-code · cpu · generating');
  const crashed = renderStatus({ phase: 'crashed', enabled: true, server: undefined, detail: 'stopped 4 times' });
  assert.deepEqual([crashed.text, crashed.tooltip], ['$(error) MixQ: server stopped', 'stopped 4 times']);
  assert.equal(renderStatus({ phase: 'restarting', enabled: true, server: undefined }).text, '$(loading~spin) MixQ: restarting');
});

test('status bar: the devices in use and the placement mode', () => {
  const placed: protocol.ModelSummary = {
    ...model, device: 'cuda', devices: ['cuda:0', 'cuda:1'],
    placement: { mode: 'layer', devices: [{ name: 'cuda:0', weightBytes: 12.5 * 2 ** 30, arenaBytes: 0 }, { name: 'cuda:1', weightBytes: 11 * 2 ** 30, arenaBytes: 0 }] },
  };
  const r = renderStatus({ phase: 'running', enabled: true, server: { ...base, model: placed } });
  assert.equal(r.text, '$(sparkle) MixQ: mixq-tiny-code · cuda:0+cuda:1 layer · ready');
  assert.match(r.tooltip, /Devices: cuda:0 \(12\.5 GiB\), cuda:1 \(11\.0 GiB\) · layer split/);
  const single: protocol.ModelSummary = { ...model, devices: ['cpu'], placement: { mode: 'single', devices: [{ name: 'cpu', weightBytes: 35 * 2 ** 20, arenaBytes: 0 }] } };
  const one = renderStatus({ phase: 'running', enabled: true, server: { ...base, model: single } });
  assert.equal(one.text, '$(sparkle) MixQ: mixq-tiny-code · cpu · ready');
  assert.match(one.tooltip, /Devices: cpu \(35 MiB\) · one device/);
});

test('status bar: a remote backend that failed says so, with the reason; once it works again, the usual text', () => {
  const remote: protocol.ModelSummary = { ...model, path: 'http://gpu:8000', device: 'remote', devices: ['remote'], template: 'server' };
  const failed = renderStatus({ phase: 'running', enabled: true, server: { ...base, model: remote, backendError: 'cannot reach http://gpu:8000: ECONNREFUSED' } });
  assert.equal(failed.text, '$(warning) MixQ: remote server unavailable');
  assert.ok(failed.warning);
  assert.match(failed.tooltip, /^cannot reach http:\/\/gpu:8000: ECONNREFUSED\nMixQ retries with the next completion/);
  const ok = renderStatus({ phase: 'running', enabled: true, server: { ...base, model: remote } });
  assert.equal(ok.text, '$(sparkle) MixQ: mixq-tiny-code · remote · ready');
  assert.ok(!ok.warning);
});
