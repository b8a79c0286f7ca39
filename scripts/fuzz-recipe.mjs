#!/usr/bin/env node
// Coverage-guided fuzzing of the recipe parser (*.mixq.toml: smol-toml + server/src/recipe), the TypeScript
// counterpart of the libFuzzer targets in native/fuzz. The target is test/fuzz/recipeTarget.ts (compiled to
// out/test/fuzz/recipeTarget.js: `npm run build` first); its checkRecipe(text) throws on a broken promise.
//
// Coverage comes from V8's own block coverage (node:inspector, Profiler.takePreciseCoverage with call counts) of the
// recipe modules and smol-toml, no instrumenting dependency: a feature is (script, block, hit-count bucket) as in
// libFuzzer; an input that reaches a new feature joins the corpus. Mutations: character edits biased to TOML's
// syntax, dictionary tokens (keys, tables, values, edge-case literals), line copies/deletes/swaps, splices with other
// corpus inputs; at most 4096 characters.
//
// Usage: node scripts/fuzz-recipe.mjs CORPUS_DIR -max_total_time=SECONDS -artifact_prefix=DIR/ [-timeout=SECONDS]
//        node scripts/fuzz-recipe.mjs FILE...      (replays inputs: exit 1 on the first that fails)
// The log follows libFuzzer's lines that scripts/fuzz.sh reads: "#N NEW cov: C corp: K", "stat::number_of_executed_units:".
// A failing input is written to DIR/crash-SHA1 (a hang past -timeout to DIR/timeout-SHA1, by a watchdog thread
// that then ends the process) and the run exits 1.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { Session } from 'node:inspector';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const MAX_LEN = 4096;

const flags = Object.fromEntries(process.argv.slice(2).filter((a) => a.startsWith('-')).map((a) => a.replace(/^-+/, '').split('=')));
const paths = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const seconds = Number(flags.max_total_time ?? 60);
const timeoutS = Number(flags.timeout ?? 10);
const artifacts = flags.artifact_prefix ?? './';

const session = new Session();
session.connect();
const post = (method, params = {}) => {
  let out;
  let error;
  session.post(method, params, (e, r) => { error = e; out = r; });  // same-thread session: answered synchronously
  if (error) throw error;
  return out;
};
post('Profiler.enable');
post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });

const { checkRecipe } = require(path.join(root, 'out', 'test', 'fuzz', 'recipeTarget.js'));
const COVERED = /[\\/]out[\\/]server[\\/]recipe[\\/]|[\\/]smol-toml[\\/]/;
const bucket = (n) => (n <= 3 ? n : n <= 7 ? 4 : n <= 15 ? 5 : n <= 31 ? 6 : n <= 127 ? 7 : 8);

/** The features the last execution reached (script:start:end:bucket of every block run at least once). */
function features() {
  const out = [];
  for (const script of post('Profiler.takePreciseCoverage').result) {
    if (!COVERED.test(script.url)) continue;
    const id = path.basename(script.url);
    for (const fn of script.functions) {
      for (const r of fn.ranges) if (r.count > 0) out.push(`${id}:${r.startOffset}:${r.endOffset}:${bucket(r.count)}`);
    }
  }
  return out;
}

const sha1 = (s) => createHash('sha1').update(s).digest('hex');

// ---- replay mode: FILE... ----
if (paths.length > 0 && !fs.statSync(paths[0]).isDirectory()) {
  for (const f of paths) {
    try {
      checkRecipe(fs.readFileSync(f, 'utf8'));
    } catch (e) {
      console.error(`${f}: ${e.message}`);
      process.exit(1);
    }
  }
  console.log(`replayed ${paths.length} inputs: no failure`);
  process.exit(0);
}

// ---- fuzzing mode: CORPUS_DIR ----
const corpusDir = paths[0];
if (!corpusDir) {
  console.error('usage: node scripts/fuzz-recipe.mjs CORPUS_DIR -max_total_time=S -artifact_prefix=DIR/');
  process.exit(2);
}
fs.mkdirSync(corpusDir, { recursive: true });

// Watchdog: the current input lives in shared memory; a thread writes it out and ends the process when no execution
// has finished for timeoutS seconds (a synchronous hang cannot be interrupted from this thread).
const shared = new SharedArrayBuffer(8 + 4 * MAX_LEN * 3);
const state = new Int32Array(shared, 0, 2);  // [executions, byte length of the current input]
const current = new Uint8Array(shared, 8);
new Worker(`
  const { workerData: { shared, timeoutS, prefix } } = require('node:worker_threads');
  const fs = require('node:fs'), crypto = require('node:crypto');
  const state = new Int32Array(shared, 0, 2), current = new Uint8Array(shared, 8);
  let last = -1, since = Date.now();
  setInterval(() => {
    const n = Atomics.load(state, 0);
    if (n !== last) { last = n; since = Date.now(); return; }
    if (Date.now() - since < timeoutS * 1000) return;
    const input = Buffer.from(current.slice(0, Atomics.load(state, 1)));
    const file = prefix + 'timeout-' + crypto.createHash('sha1').update(input).digest('hex');
    fs.writeFileSync(file, input);
    process._rawDebug('==fuzz-recipe== ERROR: timeout: one input ran for more than ' + timeoutS + ' s; written to ' + file);
    process.kill(process.pid, 'SIGKILL');
  }, 250);  // the Worker is unref'd: this keeps only the watchdog thread alive
`, { eval: true, workerData: { shared, timeoutS, prefix: artifacts } }).unref();
const encoder = new TextEncoder();

const seen = new Set();
const corpus = [];
let executions = 0;

/** Runs one input; returns the number of new features (the input is kept when > 0). Exits on a failure. */
function run(text) {
  const { written } = encoder.encodeInto(text, current);
  Atomics.store(state, 1, written);
  try {
    checkRecipe(text);
  } catch (e) {
    const file = `${artifacts}crash-${sha1(text)}`;
    fs.writeFileSync(file, text);
    console.log(`==fuzz-recipe== ERROR: ${e.message}\nSUMMARY: fuzz-recipe: ${e.name} after ${executions} executions; input written to ${file}`);
    report();
    process.exit(1);
  }
  executions++;
  Atomics.store(state, 0, executions);
  let fresh = 0;
  for (const f of features()) {
    if (!seen.has(f)) {
      seen.add(f);
      fresh++;
    }
  }
  return fresh;
}

// Dictionary: what the schema and TOML know (keys, tables, enum values, literals at the edges of the parser).
const DICT = [
  'source', 'output', 'overwrite', 'device', 'modules_to_not_convert', '[calibration]', '[quant]', '[[quant]]', 'path', 'samples', 'seq_len',
  'seed', 'method', 'bits', 'group_size', 'zero_point', 'rounding', 'propagate', '"awq"', '"rtn"', '"gptq"', '"nearest"', '"quantized"', '"float"',
  '"cpu"', '"cuda"', '"auto"', '["gate"]', '32', '64', '128', '4', 'true', 'false', ' = ', '=', '.', '"', "'", '"""', "'''", '[', ']', '{', '}',
  ',', '#', '\n', '\r\n', '\\', '\\u0000', '\\U0010FFFF', '\\uD800', '0x7fffffffffffffff', '9223372036854775808', '99999999999999999999',
  '-0', '+1', '1e400', '1_000', '0o777', '0b101', 'inf', '-nan', '1979-05-27T07:32:00Z', '07:32:00', '1979-05-27', '{ a = 1 }', 'a.b.c',
  '"quant".method', 'quant.method', '\t', '\u00a0', '\u2028', '\ufeff', 'é', '😀', '\0',
];
const ALPHABET = ' \n\t=[]{}".,#\'_-+0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\\\r';

const rnd = (n) => Math.floor(Math.random() * n);
const pick = (a) => a[rnd(a.length)];
const randomChar = () => (Math.random() < 0.9 ? pick(ALPHABET) : String.fromCodePoint(rnd(0x110000) & ~0x800 /* no lone surrogates */));

function mutate(text) {
  const at = rnd(text.length + 1);
  switch (rnd(9)) {
    case 0: return text.slice(0, at) + randomChar() + text.slice(at);
    case 1: return text.slice(0, at) + randomChar() + text.slice(at + 1);
    case 2: return text.slice(0, at) + text.slice(at + 1 + rnd(8));
    case 3: return text.slice(0, at) + pick(DICT) + text.slice(at);
    case 4: return text.slice(0, at) + pick(DICT) + text.slice(at + 1 + rnd(6));
    case 5: {  // copy, drop or swap lines
      const lines = text.split('\n');
      const i = rnd(lines.length);
      const j = rnd(lines.length);
      const op = rnd(3);
      if (op === 0) lines.splice(j, 0, lines[i]);
      else if (op === 1) lines.splice(i, 1);
      else [lines[i], lines[j]] = [lines[j], lines[i]];
      return lines.join('\n');
    }
    case 6: {  // splice with another input
      const other = pick(corpus);
      const from = rnd(other.length + 1);
      return text.slice(0, at) + other.slice(from, from + 1 + rnd(200)) + text.slice(at + rnd(40));
    }
    case 7: {  // repeat a piece
      const len = 1 + rnd(16);
      return text.slice(0, at) + text.slice(at, at + len).repeat(2 + rnd(8)) + text.slice(at);
    }
    default: {  // replace a number with an edge value
      return text.replace(/-?\d+/, () => pick(['0', '-1', '1', '2', '31', '33', '9007199254740993', '1e3', '128.0', '-0', '0x80']));
    }
  }
}

const t0 = Date.now();
let lastPulse = t0;
function report() {
  const s = (Date.now() - t0) / 1000;
  console.log(`#${executions} DONE cov: ${seen.size} corp: ${corpus.length} exec/s: ${Math.round(executions / Math.max(s, 1e-3))}`);
  console.log(`stat::number_of_executed_units: ${executions}`);
  console.log(`stat::new_units_added: ${added}`);
}

let added = 0;
for (const name of fs.readdirSync(corpusDir).sort()) {
  const text = fs.readFileSync(path.join(corpusDir, name), 'utf8');
  run(text);
  corpus.push(text);
}
if (corpus.length === 0) corpus.push('');
console.log(`#${executions} INITED cov: ${seen.size} corp: ${corpus.length}`);

while (Date.now() - t0 < seconds * 1000) {
  let text = pick(corpus);
  for (let k = 1 + rnd(4); k > 0; k--) text = mutate(text);
  if (text.length > MAX_LEN) text = text.slice(0, MAX_LEN);
  if (run(text) > 0) {
    corpus.push(text);
    added++;
    fs.writeFileSync(path.join(corpusDir, sha1(text)), text);
    console.log(`#${executions} NEW cov: ${seen.size} corp: ${corpus.length} len: ${text.length}`);
  }
  if (Date.now() - lastPulse > 10_000) {
    lastPulse = Date.now();
    console.log(`#${executions} pulse cov: ${seen.size} corp: ${corpus.length} exec/s: ${Math.round(executions / ((Date.now() - t0) / 1000))}`);
  }
}
report();
process.exit(0);
