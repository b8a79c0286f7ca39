// The real `mixq` process (bin/mixq.js): reference greedy outputs, perplexity, and error handling.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';

import { cliPath, loadReference, loadReferenceFigures, needsFixtures, sharedFixtures, tinyModelDir } from './helpers';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function mixq(...args: string[]): Run {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 600_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function json(r: Run): Record<string, unknown> {
  assert.equal(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, 'one JSON object on stdout');
  return JSON.parse(lines[0]) as Record<string, unknown>;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-cli-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('generate --ids <reference input_ids> --max-tokens 32 --greedy --json equals greedy_32 for every prompt', { skip: needsFixtures }, () => {
  const ref = loadReference();
  for (const p of ref.prompts) {
    const out = json(mixq('generate', '--model', tinyModelDir, '--ids', p.input_ids.join(','), '--max-tokens', '32', '--greedy', '--json'));
    assert.deepEqual(out.generated_ids, p.greedy_32, p.name);
    assert.equal(out.prompt_tokens, p.input_ids.length);
    assert.equal(out.evaluated_tokens, p.input_ids.length + 31, 'prompt + 31 decode steps (the last token needs no forward pass)');
    assert.equal(out.stop_reason, 'max_tokens');
    for (const key of ['text', 'prefill_ms', 'decode_ms']) assert.ok(key in out, key);
    assert.ok((out.prefill_ms as number) > 0 && (out.decode_ms as number) > 0);
  }
});

test('generate --prompt applies the tokenizer rules (BOS) and streams the text', { skip: needsFixtures }, () => {
  const p = loadReference().prompts.find((q) => q.name === 'python_def')!;
  const out = json(mixq('generate', '--model', tinyModelDir, '--prompt', p.text, '--max-tokens', '32', '--json'));
  assert.equal(out.prompt_tokens, p.input_ids.length);
  assert.deepEqual(out.generated_ids, p.greedy_32);
  assert.equal(out.text, p.greedy_text);
  // Without --json the completion streams to stdout, followed by one newline.
  const promptFile = path.join(tmp, 'prompt.py');
  fs.writeFileSync(promptFile, p.text);
  const streamed = mixq('generate', '--model', tinyModelDir, '--prompt-file', promptFile, '--max-tokens', '32', '--greedy');
  assert.equal(streamed.code, 0, streamed.stderr);
  assert.equal(streamed.stdout, p.greedy_text + '\n');
  // --prompt-file - reads stdin.
  const piped = spawnSync(process.execPath, [cliPath, 'generate', '--model', tinyModelDir, '--prompt-file', '-', '--max-tokens', '32', '--json'], { input: p.text, encoding: 'utf8' });
  assert.equal(piped.status, 0, piped.stderr);
  assert.deepEqual((JSON.parse(piped.stdout) as { generated_ids: number[] }).generated_ids, p.greedy_32);
});

test('generate --prompt P --suffix S --fim psm|spm builds the reference FIM prompts', { skip: needsFixtures }, () => {
  for (const p of loadReference().prompts.filter((q) => q.suffix !== null)) {
    const layout = p.name.endsWith('spm') ? 'spm' : 'psm';
    const out = json(mixq('generate', '--model', tinyModelDir, '--prompt', p.text, '--suffix', p.suffix!, '--fim', layout, '--max-tokens', '32', '--json'));
    assert.equal(out.prompt_tokens, p.input_ids.length, p.name);
    assert.deepEqual(out.generated_ids, p.greedy_32, p.name);
  }
});

test('generate streams byte-fallback output without broken characters (unicode prompt)', { skip: needsFixtures }, () => {
  const p = loadReference().prompts.find((q) => q.name === 'unicode')!;
  const streamed = mixq('generate', '--model', tinyModelDir, '--ids', p.input_ids.join(','), '--max-tokens', '32');
  assert.equal(streamed.code, 0, streamed.stderr);
  assert.equal(streamed.stdout, p.greedy_text + '\n');
});

test('Ctrl-C (SIGINT) stops a generation at the next token: partial text printed, exit 130', async () => {
  const child = spawn(process.execPath, [cliPath, 'generate', '--model', tinyModelDir, '--prompt', 'def main():\n', '--max-tokens', '4000', '--ignore-eos'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve) =>
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.length > 0) resolve();
    }),
  );
  child.kill('SIGINT');
  const code = await exited;
  assert.equal(code, 130, stderr);
  assert.ok(stdout.trim().length > 0);
});

test('generate --stats prints counts and speeds to stderr, text stays on stdout', () => {
  const r = mixq('generate', '--model', tinyModelDir, '--ids', '1,473', '--max-tokens', '8', '--stats');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /\[2 prompt tokens \(0 reused\), 8 generated, stop: max_tokens; prefill [\d.]+ tokens\/s, decode [\d.]+ tokens\/s; mixtral/);
  assert.doesNotMatch(r.stdout, /tokens\/s/);
});

test('generate with sampling is reproducible for a seed', () => {
  const args = ['generate', '--model', tinyModelDir, '--prompt', 'import os\n', '--max-tokens', '16', '--temperature', '0.8', '--top-k', '40', '--top-p', '0.95', '--json'];
  const a = json(mixq(...args, '--seed', '7'));
  const b = json(mixq(...args, '--seed', '7'));
  assert.deepEqual(a.generated_ids, b.generated_ids);
  assert.equal((a.generated_ids as number[]).length, 16);
});

test('generate --json reports the placement; --devices/--placement give the same greedy ids as one device', { skip: needsFixtures }, () => {
  const p = loadReference().prompts[0];
  const base = ['generate', '--model', tinyModelDir, '--ids', p.input_ids.join(','), '--max-tokens', '32', '--greedy', '--json'];
  const single = json(mixq(...base));
  assert.ok('placement' in single, 'generate --json has a placement key');
  const placement = single.placement as { mode: string; devices: { name: string }[]; layers: string[]; experts: string[][] };
  assert.equal(placement.layers.length, 4, 'the device of each of the 4 layers');
  assert.ok(placement.experts.every((e) => e.length > 0));
  assert.deepEqual(single.devices, placement.devices.map((d) => d.name));
  for (const mode of ['layer', 'expert']) {
    const spread = json(mixq(...base, '--devices', 'cpu:0,cpu:1', '--placement', mode));
    assert.deepEqual(spread.generated_ids, p.greedy_32, `--placement ${mode}`);
    const got = spread.placement as { mode: string };
    // An addon from before the placement planner ignores --devices and reports one device.
    if (got.mode !== 'single') {
      assert.equal(got.mode, mode);
      assert.deepEqual(spread.devices, ['cpu:0', 'cpu:1']);
    }
  }
  // Human-readable output: the devices line goes to stderr, stdout stays the completion.
  const human = mixq('generate', '--model', tinyModelDir, '--ids', p.input_ids.join(','), '--max-tokens', '4');
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stderr, /^\[devices \S.* \((one device|layer split|expert parallel)\)\]$/m);
  assert.doesNotMatch(human.stdout, /devices/);
});

test('ppl --json prints the perplexity with full double precision, the same with each placement', { skip: needsFixtures }, () => {
  const args = ['ppl', '--model', tinyModelDir, '--ids', path.join(sharedFixtures!, 'valid_ids.safetensors'), '--windows', '4', '--seq', '64', '--json'];
  const runs = [[], ['--devices', 'cpu:0,cpu:1', '--placement', 'layer'], ['--devices', 'cpu:0,cpu:1,cpu:2', '--placement', 'expert']].map((extra) => {
    const r = mixq(...args, ...extra);
    const literal = /"ppl":([^,}]+)/.exec(r.stdout)?.[1];
    const out = json(r);
    assert.ok(literal, r.stdout);
    // The printed literal is the double's shortest round-trip form, not a rounded one.
    assert.equal(Number(literal), out.ppl);
    assert.equal(String(out.ppl), literal);
    assert.ok(literal.replace(/^[\d]*\./, '').length > 6, `ppl ${literal} has more than a few decimals`);
    return out.ppl as number;
  });
  assert.equal(runs[1], runs[0], 'layer split over 2 devices: the same perplexity');
  assert.equal(runs[2], runs[0], 'expert parallel over 3 devices: the same perplexity');
});

/** A stand-in addon (MIXQ_ADDON) that logs the options it gets and reports a two-device layer split. */
const FAKE_ADDON = String.raw`
const fs = require('node:fs');
const log = (what, value) => fs.appendFileSync(process.env.MIXQ_FAKE_LOG, JSON.stringify({ what, value }) + '\n');
const placement = {
  mode: 'layer', embed: 'cpu:0', lmHead: 'cpu:1',
  devices: [{ name: 'cpu:0', weightBytes: 100, arenaBytes: 120 }, { name: 'cpu:1', weightBytes: 50, arenaBytes: 60 }],
  layers: ['cpu:0', 'cpu:0', 'cpu:0', 'cpu:1'], experts: [0, 1, 2, 3].map((l) => Array(8).fill(l < 3 ? 'cpu:0' : 'cpu:1')),
};
module.exports = {
  version: 'fake', cudaCompiled: false, devices: () => ['cpu'], cpuFeatures: () => [],
  async loadModel(dir, opts) {
    log('loadModel', opts);
    return {
      info: () => ({ modelType: 'mixtral', numLayers: 4, numExperts: 8, vocabSize: 8192, device: 'cpu:0', threads: 1, description: 'fake',
        weightBytes: 150, devices: ['cpu:0', 'cpu:1'], placement }),
      generate(req, onToken) {
        const tokens = [473, 457];
        return { cancel() {}, result: Promise.resolve().then(() => {
          for (const t of tokens) onToken && onToken(t);
          return { tokens, stopReason: 'max_tokens', promptTokens: req.prompt.length, reusedTokens: 0, evaluatedTokens: req.prompt.length + 1, prefillMs: 1, decodeMs: 1 };
        }) };
      },
      dispose() {},
    };
  },
  async bench(opts) { log('bench', opts); return { prefillTokens: 1, decodeTokens: 1, decodeLayerMs: [] }; },
};
`;

test('device flags reach the addon (loadModel, bench); generate reports the addon\'s placement', () => {
  const fake = path.join(tmp, 'fake-addon.js');
  const log = path.join(tmp, 'fake-addon.log');
  fs.writeFileSync(fake, FAKE_ADDON);
  const env = { ...process.env, MIXQ_ADDON: fake, MIXQ_FAKE_LOG: log };
  const run = (...args: string[]): Run => {
    const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', env });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const flags = ['--devices', 'cpu:0,cpu:1', '--placement', 'layer', '--split', '3,1'];
  const out = json(run('generate', '--model', tinyModelDir, '--ids', '1,2', '--max-tokens', '2', ...flags, '--json'));
  assert.deepEqual(out.devices, ['cpu:0', 'cpu:1']);
  assert.deepEqual((out.placement as { layers: string[] }).layers, ['cpu:0', 'cpu:0', 'cpu:0', 'cpu:1']);
  const human = run('generate', '--model', tinyModelDir, '--ids', '1,2', '--max-tokens', '2', '--devices', 'cpu:0,cpu:1', '--placement', 'expert');
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stderr, /^\[devices cpu:0, cpu:1 \(layer split\)\]$/m);
  assert.equal(run('bench', '--synthetic', 'qwen3-coder-30b-a3b', '--layers', '1', '--weights', 'awq', '--devices', 'cuda:0,cuda:1', '--split', '1,2', '--json').code, 0);
  const calls = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { what: string; value: Record<string, unknown> });
  assert.deepEqual(calls.map((c) => c.what), ['loadModel', 'loadModel', 'bench']);
  assert.deepEqual(
    [calls[0].value.devices, calls[0].value.placement, calls[0].value.split, calls[0].value.device],
    [['cpu:0', 'cpu:1'], 'layer', [3, 1], undefined],
  );
  assert.deepEqual([calls[1].value.devices, calls[1].value.placement, calls[1].value.split], [['cpu:0', 'cpu:1'], 'expert', undefined]);
  assert.deepEqual(
    [calls[2].value.devices, calls[2].value.split, calls[2].value.synthetic, calls[2].value.layers, calls[2].value.weights],
    [['cuda:0', 'cuda:1'], [1, 2], 'qwen3-coder-30b-a3b', 1, 'awq'],
  );
});

test('ppl on valid_ids.safetensors (120 windows × 512) is within 0.1% of valid_ppl_fp32', { skip: needsFixtures }, () => {
  const expected = loadReferenceFigures().valid_ppl_fp32 as number;
  const out = json(mixq('ppl', '--model', tinyModelDir, '--ids', path.join(sharedFixtures!, 'valid_ids.safetensors'), '--json'));
  const ppl = out.ppl as number;
  assert.equal(out.tokens, 120 * 511);
  assert.ok(Math.abs(ppl - expected) / expected < 1e-3, `ppl ${ppl} vs reference ${expected}`);
});

test('bench --synthetic tiny --json reports consistent speeds, bandwidth and memory', () => {
  const out = json(mixq('bench', '--synthetic', 'tiny', '--prefill-tokens', '16', '--decode-tokens', '8', '--threads', '2', '--json'));
  assert.equal(out.prefillTokens, 16);
  assert.equal(out.decodeTokens, 8);
  for (const key of ['prefillTokensPerSec', 'decodeTokensPerSec', 'decodeMsPerLayer', 'weightBytesPerToken', 'memcpyGBps', 'peakRssBytes']) {
    assert.ok(typeof out[key] === 'number' && (out[key] as number) > 0, `${key} = ${out[key]}`);
  }
  const layerMs = out.decodeLayerMs as number[];
  assert.equal(layerMs.length, 4, 'the tiny shape has 4 layers');
  // The ratio is the decode's weight traffic over the measured copy bandwidth.
  const weightGBps = ((out.weightBytesPerToken as number) * (out.decodeTokensPerSec as number)) / 1e9;
  assert.ok(Math.abs((out.bandwidthRatio as number) - weightGBps / (out.memcpyGBps as number)) < 1e-6 * Math.max(1, weightGBps));
});

/** A copy of the fixture model (weights symlinked) with config.json edited by `edit`. */
function modelWithConfig(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(tinyModelDir)) {
    if (f !== 'config.json') fs.symlinkSync(path.join(tinyModelDir, f), path.join(dir, f));
  }
  const config = JSON.parse(fs.readFileSync(path.join(tinyModelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return dir;
}

const errorCases: [string, () => string[], number, RegExp][] = [
  ['missing model folder', () => ['generate', '--model', path.join(tmp, 'no-such-model'), '--prompt', 'x'], 1, /model folder not found: .*no-such-model/],
  ['unknown flag', () => ['generate', '--model', tinyModelDir, '--prompt', 'x', '--max-tokenz', '3'], 2, /unknown flag --max-tokenz/],
  ['missing value', () => ['generate', '--model', tinyModelDir, '--prompt'], 2, /--prompt needs a value/],
  ['no prompt', () => ['generate', '--model', tinyModelDir], 2, /exactly one of --prompt, --prompt-file, --ids/],
  ['greedy with sampling', () => ['generate', '--model', tinyModelDir, '--ids', '1', '--greedy', '--temperature', '0.5'], 2, /--greedy cannot be combined/],
  ['token id out of range', () => ['generate', '--model', tinyModelDir, '--ids', '1,9000'], 2, /9000 is not a token id/],
  ['unknown command', () => ['frobnicate'], 2, /unknown command "frobnicate"/],
  ['bad FIM layout', () => ['generate', '--model', tinyModelDir, '--prompt', 'a', '--suffix', 'b', '--fim', 'pms'], 2, /--fim: "pms" is not spm or psm/],
  ['--suffix with --ids', () => ['generate', '--model', tinyModelDir, '--ids', '1', '--suffix', 'b'], 2, /--suffix needs --prompt/],
  ['missing prompt file', () => ['generate', '--model', tinyModelDir, '--prompt-file', path.join(tmp, 'none.txt')], 1, /none\.txt: cannot read/],
  ['model_type not mixtral', () => ['generate', '--model', modelWithConfig('llama', (c) => (c.model_type = 'llama')), '--prompt', 'x'], 1, /config\.json.*model_type|model_type.*config\.json/],
  ['missing config field', () => ['generate', '--model', modelWithConfig('nohidden', (c) => delete c.hidden_size), '--prompt', 'x'], 1, /hidden_size/],
  ['ppl: bad ids file', () => ['ppl', '--model', tinyModelDir, '--ids', path.join(tmp, 'none.safetensors')], 1, /none\.safetensors: cannot read/],
  ['ppl: too few tokens', () => {
    const f = path.join(tmp, 'few.safetensors');
    const header = Buffer.from(JSON.stringify({ ids: { dtype: 'I32', shape: [4], data_offsets: [0, 16] } }));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(f, Buffer.concat([len, header, Buffer.from(Int32Array.from([1, 2, 3, 4]).buffer)]));
    return ['ppl', '--model', tinyModelDir, '--ids', f];
  }, 2, /few\.safetensors: 4 tokens, fewer than --windows 120 × --seq 512/],
  ['--split count differs from --devices', () => ['generate', '--model', tinyModelDir, '--ids', '1', '--devices', 'cpu:0,cpu:1', '--split', '1'], 2, /--split: 1 proportion\(s\) for 2 device/],
  ['--split not > 0', () => ['ppl', '--model', tinyModelDir, '--ids', 'x.safetensors', '--devices', 'cpu:0,cpu:1', '--split', '1,0'], 2, /--split: 0 is not a proportion > 0/],
  ['bad --placement', () => ['bench', '--synthetic', 'tiny', '--devices', 'cpu:0,cpu:1', '--placement', 'rows'], 2, /--placement: "rows" is not layer or expert/],
  ['bad --device', () => ['generate', '--model', tinyModelDir, '--ids', '1', '--device', 'tpu'], 2, /--device: "tpu"/],
  ['bench: both model and synthetic', () => ['bench', '--model', tinyModelDir, '--synthetic', 'tiny'], 2, /exactly one of --model, --synthetic/],
  ['bench: --weights without --synthetic', () => ['bench', '--model', tinyModelDir, '--weights', 'awq'], 2, /--weights applies to --synthetic only/],
  ['bench: bad --weights', () => ['bench', '--synthetic', 'tiny', '--weights', 'int3'], 2, /--weights: "int3" is not bf16 or awq/],
];

for (const [what, args, code, message] of errorCases) {
  test(`error: ${what} → exit ${code} and a message on stderr`, () => {
    const r = mixq(...args());
    assert.equal(r.code, code, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
}

test('--help lists the commands; each command has --help', () => {
  const top = mixq('--help');
  assert.equal(top.code, 0);
  for (const c of ['generate', 'ppl', 'bench']) {
    assert.match(top.stdout, new RegExp(`\\b${c}\\b`));
    const h = mixq(c, '--help');
    assert.equal(h.code, 0);
    assert.match(h.stdout, new RegExp(`usage: mixq ${c}`));
  }
});
