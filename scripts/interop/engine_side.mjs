#!/usr/bin/env node
// What OUR engine computes on AWQ checkpoints, recorded for check_awq_checkpoint.py to compare against
// transformers on a machine without Node (the GPU machine). Uses the addon already built in build/Release.
//
//   node scripts/interop/engine_side.mjs --out .interop/pack/ours.json NAME=DIR [NAME=DIR ...]
//        [--ids ../shared/fixtures/valid_ids.safetensors] [--reference ../shared/fixtures/mixq-tiny-code/reference/reference.json]
//        [--threads 2] [--vocab-stride 16]
//
// Per checkpoint it records:
//   cli_ppl       the JSON line of `node bin/mixq.js ppl --model DIR --ids IDS --json` (120 windows × 512)
//   window_nll    [120] mean NLL (nats) of each window alone, from the addon's perplexity(ids_w, 1, 512)
//   prompts[]     for each reference prompt (token ids only):
//     greedy_32          32 greedy tokens (EOS ignored) from the engine's generate()
//     next_logprob       [n-1] log p(ids[k+1] | ids[..k]) at every prompt position
//     last_tokens        token ids probed at the last prompt position (every vocab_stride-th id, plus the
//                        greedy continuation's tokens), and last_logprob, their log-softmax values
//
// The addon exposes no logits, only perplexity(), whose NLL is summed in double. Log-probabilities come from
// differences of those sums: with S(x) = total NLL of sequence x over its own next tokens (= mean × (len − 1)),
//   log p(t | P) = −(S(P + [t]) − S(P)).
// The shared positions are evaluated the same way in both calls, so the difference is that one token's NLL
// to within float32 noise of the shared part (measured: `self_check` repeats one probe).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = path.resolve(repo, '..', 'shared', 'fixtures');

function parseArgs(argv) {
  const a = {
    out: null,
    ids: path.join(fixtures, 'valid_ids.safetensors'),
    reference: path.join(fixtures, 'mixq-tiny-code', 'reference', 'reference.json'),
    threads: 2,
    vocabStride: 16,
    windows: 120,
    seq: 512,
    checkpoints: [],
  };
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--out') a.out = v();
    else if (k === '--ids') a.ids = v();
    else if (k === '--reference') a.reference = v();
    else if (k === '--threads') a.threads = Number(v());
    else if (k === '--vocab-stride') a.vocabStride = Number(v());
    else if (k === '--windows') a.windows = Number(v());
    else if (k === '--seq') a.seq = Number(v());
    else if (k.includes('=') && !k.startsWith('--')) {
      const [name, dir] = k.split('=', 2);
      a.checkpoints.push({ name, dir: path.resolve(dir) });
    } else throw new Error(`unknown argument ${k}`);
  }
  if (!a.out || a.checkpoints.length === 0) {
    throw new Error('usage: engine_side.mjs --out FILE NAME=DIR [NAME=DIR ...] [--ids F] [--reference F] [--threads N]');
  }
  return a;
}

// Total NLL (nats) of `ids` predicting its own next tokens: mean × (len − 1); 0 for a single token.
async function totalNll(engine, ids) {
  if (ids.length < 2) return 0;
  const r = await engine.perplexity(Int32Array.from(ids), 1, ids.length);
  if (r.tokens !== ids.length - 1) throw new Error(`perplexity counted ${r.tokens} tokens for a sequence of ${ids.length}`);
  return r.nll * r.tokens;
}

function addonSha256() {
  const file = process.env.MIXQ_ADDON || path.join(repo, 'build', 'Release', 'mixq.node');
  return fs.existsSync(file) ? createHash('sha256').update(fs.readFileSync(file)).digest('hex') : null;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  for (const f of [args.ids, args.reference]) {
    if (!fs.existsSync(f)) {
      console.log(`SKIPPED: ../shared/fixtures not found (${f})`);
      process.exit(77);
    }
  }
  const { loadAddon } = require(path.join(repo, 'out', 'server', 'native.js'));
  const { readSafetensorsTensor } = require(path.join(repo, 'out', 'server', 'cli', 'safetensors.js'));
  const addon = loadAddon();
  const stream = readSafetensorsTensor(args.ids, 'ids', 'I32').data;
  const reference = JSON.parse(fs.readFileSync(args.reference, 'utf8'));
  const result = {
    generated_by: 'scripts/interop/engine_side.mjs',
    date: new Date().toISOString(),
    host: `${process.platform} ${process.arch}`,
    addon_version: addon.version,
    // which build produced these numbers (build/ is rebuilt by others while this runs elsewhere)
    addon_sha256: addonSha256(),
    threads: args.threads,
    windows: args.windows,
    seq: args.seq,
    vocab_stride: args.vocabStride,
    checkpoints: {},
  };

  for (const ck of args.checkpoints) {
    const t0 = Date.now();
    // 1. The headline number, through the CLI exactly as a user runs it.
    const cli = spawnSync(process.execPath, [path.join(repo, 'bin', 'mixq.js'), 'ppl', '--model', ck.dir, '--ids', args.ids,
      '--windows', String(args.windows), '--seq', String(args.seq), '--threads', String(args.threads), '--json'], { encoding: 'utf8' });
    if (cli.status !== 0) throw new Error(`mixq ppl failed on ${ck.dir}: ${cli.stderr}`);
    const cliPpl = JSON.parse(cli.stdout.trim().split('\n').pop());
    console.error(`${ck.name}: mixq ppl ${cliPpl.ppl}`);

    const engine = await addon.loadModel(ck.dir, { device: 'cpu', threads: args.threads, contextLength: args.seq });
    const info = engine.info();
    try {
      // 2. Each window alone: localises any disagreement to the windows it comes from.
      const windowNll = [];
      for (let w = 0; w < args.windows; ++w) {
        const r = await engine.perplexity(stream.subarray(w * args.seq, (w + 1) * args.seq), 1, args.seq);
        windowNll.push(r.nll);
      }

      // 3. Prompts: greedy continuation, per-position log-probs, probed log-probs at the last position.
      const prompts = [];
      for (const p of reference.prompts) {
        const ids = p.input_ids;
        engine.reset();
        const gen = await engine.generate({ prompt: ids, maxTokens: 32, greedy: true, ignoreEos: true }).result;
        const prefixTotals = [0];
        for (let k = 2; k <= ids.length; ++k) prefixTotals.push(await totalNll(engine, ids.slice(0, k)));
        const nextLogprob = [];
        for (let k = 1; k < prefixTotals.length; ++k) nextLogprob.push(-(prefixTotals[k] - prefixTotals[k - 1]));
        const base = prefixTotals[prefixTotals.length - 1];
        const probe = new Set();
        for (let t = 0; t < info.vocabSize; t += args.vocabStride) probe.add(t);
        for (const t of gen.tokens) probe.add(t);
        const lastTokens = [...probe].sort((x, y) => x - y);
        const lastLogprob = [];
        for (const t of lastTokens) lastLogprob.push(-((await totalNll(engine, [...ids, t])) - base));
        // Repeat one probe: the spread is the noise floor of the difference method.
        const again = -((await totalNll(engine, [...ids, gen.tokens[0]])) - (await totalNll(engine, ids)));
        prompts.push({
          name: p.name,
          input_ids: ids,
          greedy_32: gen.tokens,
          stop_reason: gen.stopReason,
          next_logprob: nextLogprob,
          last_tokens: lastTokens,
          last_logprob: lastLogprob,
          self_check: { token: gen.tokens[0], first: lastLogprob[lastTokens.indexOf(gen.tokens[0])], again },
        });
      }
      result.checkpoints[ck.name] = {
        dir: ck.dir,
        description: info.description,
        quantization: info.quantization,
        cli_ppl: cliPpl,
        window_nll: windowNll,
        prompts,
        seconds: (Date.now() - t0) / 1000,
      };
      console.error(`${ck.name}: ${info.description}, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      engine.dispose();
    }
  }
  fs.mkdirSync(path.dirname(path.resolve(args.out)), { recursive: true });
  fs.writeFileSync(args.out, JSON.stringify(result) + '\n');
  console.error(`wrote ${args.out}`);
}

main().catch((e) => {
  console.error(`engine_side: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
