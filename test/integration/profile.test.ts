/**
 * The profiler's protocol (mixq/profile, mixq/profileEnable, mixq/profileReset, mixq/profileModel) over the real
 * language server with the bundled model: nothing recorded while off; on, a known op's call count grows with each
 * completion; the profile answers while the engine runs; the standard benchmark reports progress, the ceilings and
 * can be cancelled; reset and a model reload start a new epoch, the reload keeping profiling on.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { CancellationTokenSource } from 'vscode-languageserver-protocol/node';

import * as P from '#protocol';
import type * as protocol from '#protocol';
import { tinyModelDir } from '../helpers';
import { needsAddon, TestServer } from './lsp-client';

const SETTINGS: Partial<protocol.ServerSettings> = {
  modelPath: tinyModelDir, device: 'cpu', threads: 2, maxTokens: 16, timeCapMs: 20_000, debounceMs: 0, contextFromOpenFiles: false, prefetch: false,
};
const FORWARD_OPS = ['embed', 'rms_norm', 'linear', 'rope', 'attention', 'router', 'moe_experts', 'moe_combine', 'add'];

const calls = (p: protocol.ProfileData, op: string, device = 'cpu:0'): number =>
  p.devices.find((d) => d.device === device)?.kernels.find((k) => k.name === op)?.calls ?? 0;

describe('profiling over JSON-RPC', { skip: needsAddon }, () => {
  let server: TestServer;
  const uri = 'file:///work/profile.py';
  let text = 'def add(a, b):\n    ';
  const complete = async (): Promise<void> => {
    text += 'return a + b\n\ndef mul(a, b):\n    '; // a new cursor state each time: never served from the cache
    await server.setText(uri, text);
    await server.complete(uri, text.length);
  };
  before(async () => {
    server = await TestServer.start(SETTINGS);
    const s = await server.waitFor((x) => x.state === 'ready' || x.state === 'error');
    assert.equal(s.state, 'ready', s.message);
    await server.open(uri, text);
  });
  after(async () => {
    await server?.stop();
  });

  test('off: the model\'s device is listed, nothing is recorded by a completion', async () => {
    await complete();
    const p = await server.conn.sendRequest(P.ProfileRequest);
    assert.equal(p.enabled, false);
    assert.deepEqual(p.devices.map((d) => [d.device, d.kind, d.kernels.length, d.events.length]), [['cpu:0', 'cpu', 0, 0]]);
    assert.match(p.model ?? '', /mixtral 4 layers/);
  });

  test('on: every op of the forward pass is counted, and linear\'s count grows with each completion', async () => {
    const on = await server.conn.sendRequest(P.ProfileEnableRequest, { enabled: true });
    assert.equal(on.enabled, true);
    await complete();
    const first = await server.conn.sendRequest(P.ProfileRequest);
    for (const op of FORWARD_OPS) assert.ok(calls(first, op) > 0, `${op}: ${calls(first, op)} calls`);
    await complete();
    const second = await server.conn.sendRequest(P.ProfileRequest);
    assert.ok(calls(second, 'linear') > calls(first, 'linear'), `linear ${calls(first, 'linear')} → ${calls(second, 'linear')}`);
    assert.ok(second.steps.some((s) => s.name === 'decode'), 'decode steps recorded');
    assert.ok(P.lastStepTimeline(second)!.tracks[0].events.length > 0, 'the last decode step has a timeline');
    // The ceilings are measured in the background after switching on.
    for (let i = 0; i < 200 && !(await server.conn.sendRequest(P.ProfileRequest)).ceilings.copyGBps['cpu:0']; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok((await server.conn.sendRequest(P.ProfileRequest)).ceilings.copyGBps['cpu:0'] > 0, 'host copy bandwidth measured');
  });

  test('profileModel: progress, the run\'s profile with ceilings, mixq/profile answered while it runs', async () => {
    const progress: protocol.ProfileProgress[] = [];
    const during: protocol.ProfileData[] = [];
    const sub = server.conn.onNotification(P.ProfileProgressNotification, (p: protocol.ProfileProgress) => {
      progress.push(p);
      if (p.phase === 'decode' && p.done === 2) void server.conn.sendRequest(P.ProfileRequest).then((d) => during.push(d));
    });
    const r = await server.conn.sendRequest(P.ProfileModelRequest, { prefillTokens: 48, decodeTokens: 24 });
    sub.dispose();
    assert.equal(r.cancelled, false);
    assert.equal(r.prefillTokens, 48);
    assert.equal(r.decodeTokens, 24);
    assert.deepEqual([...new Set(progress.map((p) => p.phase))], ['queued', 'prefill', 'decode', 'ceilings', 'done']);
    assert.equal(progress.filter((p) => p.phase === 'decode').length, 24);
    assert.equal(r.profile.steps.filter((s) => s.name === 'prefill').length, 1, 'the profile is the run alone (reset first)');
    assert.equal(r.profile.steps.filter((s) => s.name === 'decode').length, 23);
    assert.equal(calls(r.profile, 'embed'), 24);
    assert.ok(r.profile.ceilings.copyGBps['cpu:0'] > 0);
    assert.equal(during.length, 1, 'mixq/profile answered during the run');
    const json = P.profileJson(r.profile);
    assert.deepEqual(Object.keys(json), ['devices', 'ceilings']);
    assert.ok(json.devices[0].kernels.every((k) => k.calls > 0 && k.total_ms > 0 && k.mean_us > 0));
    assert.equal((await server.conn.sendRequest(P.ProfileRequest)).enabled, true, 'still on: the user had switched it on');
  });

  test('profileModel is cancelled by its request\'s token', async () => {
    const source = new CancellationTokenSource();
    const sub = server.conn.onNotification(P.ProfileProgressNotification, (p: protocol.ProfileProgress) => {
      if (p.phase === 'decode' && p.done === 3) source.cancel();
    });
    const outcome = await server.conn.sendRequest(P.ProfileModelRequest, { prefillTokens: 16, decodeTokens: 400 }, source.token).then(
      (r) => r,
      (e: Error) => e,
    );
    sub.dispose();
    if (outcome instanceof Error) assert.match(outcome.message, /cancel/i);
    else assert.ok(outcome.cancelled && outcome.decodeTokens < 400, `stopped after ${outcome.decodeTokens} tokens`);
    // The server goes on answering completions.
    await complete();
  });

  test('reset starts a new epoch; a model reload keeps profiling on over the new devices', async () => {
    const before = await server.conn.sendRequest(P.ProfileRequest);
    const reset = await server.conn.sendRequest(P.ProfileResetRequest);
    assert.notEqual(reset.epoch, before.epoch);
    assert.equal(calls(reset, 'linear'), 0);
    await server.configure({ devices: ['cpu:0', 'cpu:1'], placement: 'layer' });
    await server.waitFor((s) => s.state === 'ready' && (s.model?.devices ?? []).length === 2);
    await complete();
    const p = await server.conn.sendRequest(P.ProfileRequest);
    assert.equal(p.enabled, true);
    assert.notEqual(p.epoch, reset.epoch);
    assert.deepEqual(p.devices.map((d) => d.device), ['cpu:0', 'cpu:1']);
    for (const d of ['cpu:0', 'cpu:1']) assert.ok(calls(p, 'linear', d) > 0, `${d} ran linear ops`);
    const trace = P.chromeTrace(p);
    const pids = new Set(trace.traceEvents.filter((e) => e.ph === 'X' && e.cat === 'cpu').map((e) => e.pid));
    assert.deepEqual([...pids].sort(), [1, 2], 'one pid per device');
  });
});
