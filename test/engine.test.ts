// The native addon through NativeEngine and the Engine wrapper: streaming order, cancellation within one token,
// KV-cache reuse, serialisation of requests, and errors.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';

import type * as engineModule from '../server/src/engine';
import type * as nativeModule from '../server/src/native';
import { loadReference, needsFixtures, serverModule, tinyModelDir } from './helpers';

const { Engine } = serverModule<typeof engineModule>('engine');
const { loadAddon } = serverModule<typeof nativeModule>('native');

const addon = loadAddon();
let native: nativeModule.NativeEngine;
let engine: engineModule.Engine;

before(async () => {
  native = await addon.loadModel(tinyModelDir, { threads: 2 });
  engine = await Engine.load(tinyModelDir, { threads: 2 });
});
after(async () => {
  native.dispose();
  await engine.dispose();
});

// A plain prompt of the fixture model: BOS + "def fibonacci(n):" pieces.
const prompt = (): number[] => engine.tokenizer!.encode('def fibonacci(n):\n    if n < 2:\n');

test('addon surface: version, devices, cpu features, model info', () => {
  assert.equal(typeof addon.version, 'string');
  assert.equal(typeof addon.cudaCompiled, 'boolean');
  assert.ok(addon.devices().includes('cpu:0'));
  assert.ok(Array.isArray(addon.cpuFeatures()));
  const info = native.info();
  assert.equal(info.modelType, 'mixtral');
  assert.deepEqual(
    [info.hiddenSize, info.intermediateSize, info.numLayers, info.numHeads, info.numKvHeads, info.headDim, info.numExperts, info.topK, info.vocabSize],
    [256, 512, 4, 4, 2, 64, 8, 2, 8192],
  );
  assert.equal(info.bosTokenId, 1);
  assert.equal(info.eosTokenId, 2);
  assert.equal(info.slidingWindow, 0);
  assert.equal(info.quantization, 'none');
  assert.equal(info.threads, 2);
  assert.ok(info.weightBytes > 30e6 && info.weightBytes < 40e6, `${info.weightBytes} bytes of bf16 weights`);
});

test('the addon exports exactly what native.ts declares', () => {
  // Typed as Record<keyof …>: adding a member to native.ts without listing it here fails to compile.
  const addonKeys: Record<keyof nativeModule.NativeAddon, 'function' | 'string' | 'boolean'> = {
    version: 'string', cudaCompiled: 'boolean', devices: 'function', cpuFeatures: 'function',
    loadModel: 'function', bench: 'function', quantize: 'function', measureCopyBandwidth: 'function',
  };
  for (const [key, type] of Object.entries(addonKeys)) {
    assert.equal(typeof (addon as unknown as Record<string, unknown>)[key], type, `addon.${key}`);
  }
  const engineKeys: Record<keyof nativeModule.NativeEngine, true> = {
    info: true, generate: true, perplexity: true, cachedTokens: true, reset: true, dispose: true,
    setProfiling: true, profile: true, resetProfile: true,
  };
  for (const key of Object.keys(engineKeys)) {
    assert.equal(typeof (native as unknown as Record<string, unknown>)[key], 'function', `engine.${key}`);
  }
  const handle = native.generate({ prompt: [1], maxTokens: 0 });
  assert.ok(handle.result instanceof Promise);
  assert.equal(typeof handle.cancel, 'function');
  return handle.result.then((r) => {
    const resultKeys: Record<keyof nativeModule.NativeGenerateResult, true> = {
      tokens: true, stopReason: true, promptTokens: true, reusedTokens: true, evaluatedTokens: true, prefillMs: true, decodeMs: true,
    };
    assert.deepEqual(Object.keys(r).sort(), Object.keys(resultKeys).sort());
    const infoKeys = Object.keys(native.info()).sort();
    const declared: Record<keyof nativeModule.NativeModelInfo, true> = {
      modelType: true, hiddenSize: true, intermediateSize: true, numLayers: true, numHeads: true, numKvHeads: true,
      headDim: true, numExperts: true, topK: true, vocabSize: true, bosTokenId: true, eosTokenId: true, contextLength: true,
      maxPositionEmbeddings: true, slidingWindow: true, weightBytes: true, quantization: true, device: true, threads: true,
      description: true, devices: true, placement: true,
    };
    // An addon from before the placement planner (issue 8) reports neither `devices` nor `placement`.
    const placementKeys = ['devices', 'placement'];
    const expected = Object.keys(declared).filter((k) => infoKeys.includes('placement') || !placementKeys.includes(k));
    assert.deepEqual(infoKeys, expected.sort());
    const info = native.info();
    if (info.placement) {
      const placementShape: Record<keyof nativeModule.NativePlacement, true> = { mode: true, devices: true, embed: true, lmHead: true, layers: true, experts: true };
      assert.deepEqual(Object.keys(info.placement).sort(), Object.keys(placementShape).sort());
      assert.equal(info.placement.layers.length, info.numLayers);
      assert.deepEqual(info.devices, info.placement.devices.map((d) => d.name));
    }
  });
});

test('streaming: every token reaches the callback, in order, before the result resolves', async () => {
  const streamed: number[] = [];
  let resolved = false;
  const gen = native.generate({ prompt: prompt(), maxTokens: 24, greedy: true, ignoreEos: true }, (t) => {
    assert.equal(resolved, false, 'a token arrived after the result resolved');
    streamed.push(t);
  });
  const r = await gen.result.then((x) => ((resolved = true), x));
  assert.equal(r.tokens.length, 24);
  assert.deepEqual(streamed, r.tokens);
  assert.equal(r.stopReason, 'max_tokens');
});

test('streaming matches the reference greedy_32 of every prompt', { skip: needsFixtures }, async () => {
  for (const p of loadReference().prompts) {
    const streamed: number[] = [];
    const r = await native.generate({ prompt: p.input_ids, maxTokens: 32 }, (t) => streamed.push(t)).result;
    assert.deepEqual(r.tokens, p.greedy_32, p.name);
    assert.deepEqual(streamed, p.greedy_32, p.name);
  }
});

test('cancel() in the first token callback stops within one more token', async () => {
  for (let trial = 0; trial < 3; trial++) {
    native.reset();
    const streamed: number[] = [];
    const gen = native.generate({ prompt: prompt(), maxTokens: 64, ignoreEos: true }, (t) => {
      streamed.push(t);
      if (streamed.length === 1) gen.cancel();
    });
    const r = await gen.result;
    assert.equal(r.stopReason, 'cancelled');
    assert.ok(r.tokens.length >= 1 && r.tokens.length <= 2, `${r.tokens.length} tokens after cancel in the first callback`);
    assert.deepEqual(streamed, r.tokens);
  }
});

test('cancel() right after generate(): the result resolves as cancelled', async () => {
  // The worker may start before cancel() runs (and a busy machine may delay the JS thread), so only the
  // outcome is certain, not the exact token count; the callback test above pins down the "within one token".
  const gen = native.generate({ prompt: prompt(), maxTokens: 200, ignoreEos: true });
  gen.cancel();
  const r = await gen.result;
  assert.equal(r.stopReason, 'cancelled');
  assert.ok(r.tokens.length < 200, JSON.stringify(r));
});

test('KV reuse: prompt + 1 token evaluates exactly 1 token and equals a cold run', async () => {
  const base = prompt();
  const extended = [...base, engine.tokenizer!.encode('    ', { addSpecialTokens: false })[0]];
  native.reset();
  const first = await native.generate({ prompt: base, maxTokens: 0 }).result;
  assert.equal(first.evaluatedTokens, base.length);
  assert.deepEqual(native.cachedTokens(), base);

  const warm = await native.generate({ prompt: extended, maxTokens: 16, ignoreEos: true }).result;
  assert.equal(warm.reusedTokens, base.length);
  assert.equal(warm.evaluatedTokens, 1 + 15, '1 prompt token + 15 decode steps');

  native.reset();
  assert.deepEqual(native.cachedTokens(), []);
  const cold = await native.generate({ prompt: extended, maxTokens: 16, ignoreEos: true }).result;
  assert.equal(cold.reusedTokens, 0);
  assert.equal(cold.evaluatedTokens, extended.length + 15);
  assert.deepEqual(warm.tokens, cold.tokens);
});

test('KV reuse of a generated continuation: the next request starts where the last one ended', async () => {
  native.reset();
  const a = await native.generate({ prompt: prompt(), maxTokens: 8, ignoreEos: true }).result;
  // The cache holds prompt + the first 7 generated tokens (the 8th was never run through the model).
  const next = [...prompt(), ...a.tokens];
  const b = await native.generate({ prompt: next, maxTokens: 1 }).result;
  assert.equal(b.reusedTokens, prompt().length + 7);
  assert.equal(b.evaluatedTokens, 1);
});

test('a second generate while one runs rejects; the running one is unaffected', async () => {
  const first = native.generate({ prompt: prompt(), maxTokens: 32, ignoreEos: true });
  const second = native.generate({ prompt: prompt(), maxTokens: 4 });
  await assert.rejects(second.result, /already running/);
  const r = await first.result;
  assert.equal(r.tokens.length, 32);
});

test('an exception in onToken stops the generation and rejects the result with it', async () => {
  let calls = 0;
  const gen = native.generate({ prompt: prompt(), maxTokens: 32, ignoreEos: true }, () => {
    calls++;
    throw new Error('boom from onToken');
  });
  await assert.rejects(gen.result, /boom from onToken/);
  assert.ok(calls === 1, `${calls} callbacks after the throwing one`);
  // The engine is usable afterwards.
  const r = await native.generate({ prompt: prompt(), maxTokens: 2 }).result;
  assert.equal(r.tokens.length, 2);
});

test('profiling: off records nothing; on counts every op of the forward pass, also read while a generation runs', async () => {
  native.resetProfile();
  await native.generate({ prompt: [1, 415, 2936], maxTokens: 2 }).result;
  const off = native.profile();
  assert.equal(off.enabled, false);
  assert.deepEqual(off.devices.map((d) => [d.device, d.kind, d.kernels.length, d.events.length]), [['cpu:0', 'cpu', 0, 0]]);
  assert.deepEqual(off.steps, []);

  native.reset(); // a cold cache: the prompt is one prefill pass
  native.setProfiling(true);
  let during: nativeModule.NativeProfile | undefined;
  const gen = native.generate({ prompt: [1, 415, 2936, 906], maxTokens: 4, ignoreEos: true }, () => {
    during ??= native.profile(); // on the JS thread while the worker evaluates
  });
  const r = await gen.result;
  const on = native.profile();
  native.setProfiling(false);
  assert.ok(during && during.enabled, 'profile() answers while a generation runs');
  assert.equal(on.enabled, true);
  const calls = Object.fromEntries(on.devices[0].kernels.map((k) => [k.name, k.calls]));
  const evals = r.tokens.length; // the prompt's pass gives the first token, each further token one decode pass
  for (const op of ['embed', 'rms_norm', 'linear', 'rope', 'attention', 'router', 'moe_experts', 'moe_combine', 'add']) {
    assert.ok(calls[op] > 0, `${op}: ${calls[op]} calls`);
  }
  assert.equal(calls.embed, evals, 'one embedding per forward pass');
  assert.equal(on.steps.filter((s) => s.name === 'prefill').length, 1);
  assert.equal(on.steps.filter((s) => s.name === 'decode').length, evals - 1);
  const linear = on.devices[0].kernels.find((k) => k.name === 'linear')!;
  assert.ok(linear.bytes > 0 && linear.totalUs > 0);
  const events = on.devices[0].events;
  assert.ok(events.every((e, i) => i === 0 || e.startUs >= events[i - 1].startUs), 'events oldest first');
  native.resetProfile();
  assert.deepEqual(native.profile().devices[0].kernels, []);
  const gbps = await addon.measureCopyBandwidth({ mib: 16, threads: 1 });
  assert.ok(gbps > 0.1, `copy bandwidth ${gbps} GB/s`);
});

test('bad requests are rejected with messages naming the field', () => {
  assert.throws(() => native.generate({ prompt: [], maxTokens: 1 }), /at least one token/);
  assert.throws(() => native.generate({ prompt: [1, 8192], maxTokens: 1 }), /prompt\[1\] is not a token id in \[0, 8192\)/);
  assert.throws(() => native.generate({ prompt: [1], maxTokens: -1 }), /maxTokens must be an integer >= 0/);
  assert.throws(() => native.generate({ prompt: [1], maxTokens: 1, greedy: false, temperature: 0 }), /temperature must be > 0/);
  assert.throws(() => native.generate({ prompt: [1], maxTokens: 1, topP: 2 }), /topP must be in \(0, 1\]/);
  assert.throws(() => native.generate({ prompt: [1], maxTokens: 1, stopIds: [1.5] }), /stopIds\[0\]/);
});

test('loadModel errors name the folder / file', async () => {
  await assert.rejects(addon.loadModel(path.join(os.tmpdir(), 'mixq-no-such-model')), /mixq-no-such-model/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-badcfg-'));
  try {
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "mixtral"');
    await assert.rejects(addon.loadModel(dir), /config\.json/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('Engine: requests run one at a time, in order, with text streamed', async () => {
  await engine.reset();
  const order: string[] = [];
  const texts: string[] = [];
  const a = engine.generate({ prompt: prompt(), maxTokens: 12, ignoreEos: true }, { onToken: () => order.push('a') });
  const b = engine.generate({ prompt: prompt(), maxTokens: 12, ignoreEos: true }, { onToken: () => order.push('b'), onText: (t) => texts.push(t) });
  assert.equal(engine.busy, true);
  const [ra, rb] = await Promise.all([a.result, b.result]);
  assert.deepEqual(order, [...Array(12).fill('a'), ...Array(12).fill('b')]);
  assert.deepEqual(ra.tokens, rb.tokens, 'same prompt, greedy');
  assert.equal(texts.join(''), rb.text);
  assert.equal(rb.text, engine.tokenizer!.decode(rb.tokens, { skipSpecialTokens: true }));
  assert.equal(rb.reusedTokens, prompt().length - 1, 'the second request reuses the prompt the first left in the cache');
  assert.equal(engine.busy, false);
});

test('Engine: cancelPrevious cancels the running and queued requests, then runs the new one', async () => {
  let firstTokens = 0;
  const running = engine.generate({ prompt: prompt(), maxTokens: 200, ignoreEos: true }, { onToken: () => firstTokens++ });
  const queued = engine.generate({ prompt: prompt(), maxTokens: 200, ignoreEos: true });
  const latest = engine.generate({ prompt: prompt(), maxTokens: 4 }, { cancelPrevious: true });
  const [r1, r2, r3] = await Promise.all([running.result, queued.result, latest.result]);
  assert.equal(r1.stopReason, 'cancelled');
  assert.ok(r1.tokens.length < 200);
  assert.equal(r2.stopReason, 'cancelled');
  assert.deepEqual(r2.tokens, []);
  assert.equal(r2.evaluatedTokens, 0, 'a request cancelled while queued never runs');
  assert.equal(r3.tokens.length, 4);
  assert.equal(r3.stopReason, 'max_tokens');
  assert.equal(firstTokens, r1.tokens.length);
});

test('Engine: stats count evaluated and reused tokens', async () => {
  await engine.reset();
  const before = { ...engine.stats };
  const p = prompt();
  await engine.generate({ prompt: p, maxTokens: 0 }).result;
  const r = await engine.generate({ prompt: [...p, 13], maxTokens: 0 }).result;
  assert.equal(r.evaluatedTokens, 1);
  assert.equal(engine.stats.generations, before.generations + 2);
  assert.equal(engine.stats.evaluatedTokens - before.evaluatedTokens, p.length + 1);
  assert.equal(engine.stats.reusedTokens - before.reusedTokens, p.length);
});

test('Engine: load errors name the folder; dispose rejects later use', async () => {
  await assert.rejects(Engine.load(path.join(os.tmpdir(), 'mixq-missing')), /model folder not found: .*mixq-missing/);
  const e = await Engine.load(tinyModelDir, { threads: 1 });
  const g = e.generate({ prompt: prompt(), maxTokens: 100, ignoreEos: true });
  await e.dispose();
  const r = await g.result;
  assert.equal(r.stopReason, 'cancelled');
  assert.throws(() => e.generate({ prompt: [1], maxTokens: 1 }), /disposed/);
});

test('Engine: an invalid request rejects its own result and the queue goes on', async () => {
  const bad = engine.generate({ prompt: [1, 99999], maxTokens: 1 });
  const good = engine.generate({ prompt: prompt(), maxTokens: 2 });
  await assert.rejects(bad.result, /prompt\[1\] is not a token id/);
  assert.equal((await good.result).tokens.length, 2);
});

test('perplexity of one window per reference prompt equals exp(-mean next_token_logprob)', { skip: needsFixtures }, async () => {
  for (const p of loadReference().prompts) {
    const lp = p.next_token_logprob;
    const expected = Math.exp(-lp.reduce((a, b) => a + b, 0) / lp.length);
    const r = await native.perplexity(Int32Array.from(p.input_ids), 1, p.input_ids.length);
    assert.equal(r.tokens, p.input_ids.length - 1);
    assert.ok(Math.abs(r.ppl - expected) / expected < 1e-4, `${p.name}: ${r.ppl} vs ${expected}`);
    assert.ok(Math.abs(r.nll - Math.log(expected)) < 1e-4);
  }
  // Through the Engine queue too, and the cache is usable afterwards.
  const p0 = loadReference().prompts[0];
  const r = await engine.perplexity(Int32Array.from(p0.input_ids), 1, p0.input_ids.length);
  assert.ok(r.ppl > 1);
  const g = await engine.generate({ prompt: p0.input_ids, maxTokens: 32 }).result;
  assert.deepEqual(g.tokens, p0.greedy_32);
});

test('perplexity rejects a stream shorter than windows × seq', async () => {
  await assert.rejects(native.perplexity(Int32Array.from([1, 2, 3]), 2, 3), /fewer|tokens|windows/);
  assert.throws(() => native.perplexity(Int32Array.from([1, 2, 3]), 0, 3), /windows must be >= 1/);
});

test('dispose() during a generation: the result resolves as cancelled, later calls throw', async () => {
  const n = await addon.loadModel(tinyModelDir, { threads: 1 });
  let tokens = 0;
  const gen = n.generate({ prompt: prompt(), maxTokens: 500, ignoreEos: true }, () => {
    if (++tokens === 2) n.dispose();
  });
  const r = await gen.result;
  assert.equal(r.stopReason, 'cancelled');
  assert.ok(r.tokens.length <= 3);
  assert.throws(() => n.info(), /disposed/);
  assert.throws(() => n.generate({ prompt: [1], maxTokens: 1 }), /disposed/);
});
