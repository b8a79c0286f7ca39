#!/usr/bin/env node
// Soak test (issue 15): a scripted typing session against the real language server process (out/server/server.js
// over stdio: loopback only, nothing leaves the machine), bounded in time. Types code into a document character by
// character as an editor would send it (didChange + an automatic inline completion per keystroke, the previous
// request cancelled by $/cancelRequest), accepts a suggestion now and then, and every SAMPLE_S seconds records the
// server's RSS, its pending requests and running generations (mixq/status) and the requests this client has
// outstanding. Prints one line per sample and a JSON summary; exits 1 if pending requests ever exceeded
// MAX_PENDING or RSS grew by more than MAX_GROWTH_MB between the first and the last minute.
//
//   node scripts/soak.mjs [SECONDS=600] [--model DIR] [--json FILE]
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const rpc = require('vscode-languageserver-protocol/node');
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const seconds = Number(args.find((a) => /^\d+$/.test(a)) ?? 600);
const modelDir = path.resolve(flag('--model', path.join(repoRoot, 'models', 'mixq-tiny-code')));
const jsonOut = flag('--json', undefined);
const SAMPLE_S = 5;
const MAX_PENDING = 4;
const MAX_GROWTH_MB = 50;
const KEY_INTERVAL_MS = 90; // ~11 characters a second within a line: a fast typist

// Code to type, over and over (a new function name each round, so the text keeps growing like a real session).
const SNIPPET = (i) => `
def process_batch_${i}(items, limit=${i % 50 + 1}):
    """Filter, transform and count the items of batch ${i}."""
    result = []
    for index, item in enumerate(items):
        if index >= limit:
            break
        value = item.strip().lower()
        if value and not value.startswith("#"):
            result.append((index, value))
    return result
`;

const server = spawn(process.execPath, [path.join(repoRoot, 'out', 'server', 'server.js'), '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
let serverStderr = '';
server.stderr.on('data', (d) => { serverStderr += d.toString(); });
const conn = rpc.createProtocolConnection(new rpc.StreamMessageReader(server.stdout), new rpc.StreamMessageWriter(server.stdin));
conn.onNotification('mixq/statusChanged', () => {});
conn.onNotification('window/logMessage', () => {});
conn.listen();

await conn.sendRequest(rpc.InitializeRequest.type, {
  processId: process.pid, rootUri: null, capabilities: {},
  initializationOptions: { settings: { modelPath: modelDir, device: 'cpu', threads: 1, maxTokens: 24, debounceMs: 75, prefetch: true } },
});
await conn.sendNotification(rpc.InitializedNotification.type, {});
const status = () => conn.sendRequest('mixq/status');
for (const t0 = Date.now(); ; ) {
  const s = await status();
  if (s.state === 'ready') break;
  if (s.state === 'error' || Date.now() - t0 > 120_000) throw new Error(`model did not load: ${s.message}`);
  await new Promise((r) => setTimeout(r, 100));
}

const uri = 'file:///soak/session.py';
// Typing into an existing file of ~25 KB, so that from the first keystroke the prompt fills its token budgets (the
// KV cache and buffers reach their working size at once): growth after that is a leak, not warm-up.
let text = 'import os\nimport sys\n' + Array.from({ length: 60 }, (_, i) => SNIPPET(1000 + i)).join('');
let version = 1;
await conn.sendNotification(rpc.DidOpenTextDocumentNotification.type, { textDocument: { uri, languageId: 'python', version, text } });

let outstanding = 0;
let maxOutstanding = 0;
let requests = 0;
let answered = 0;
let suggestions = 0;
let accepted = 0;
let errors = 0;
let lastSource;

function position(offset) {
  const before = text.slice(0, offset).split('\n');
  return { line: before.length - 1, character: before[before.length - 1].length };
}

async function edit(insert) {
  const pos = position(text.length);
  text += insert;
  version++;
  await conn.sendNotification(rpc.DidChangeTextDocumentNotification.type, {
    textDocument: { uri, version }, contentChanges: [{ range: { start: pos, end: pos }, text: insert }],
  });
}

function requestCompletion() {
  lastSource?.cancel(); // VS Code cancels the previous inline completion request on the next keystroke
  const source = new rpc.CancellationTokenSource();
  lastSource = source;
  requests++;
  outstanding++;
  maxOutstanding = Math.max(maxOutstanding, outstanding);
  const requestVersion = version;
  conn.sendRequest(rpc.InlineCompletionRequest.type, {
    textDocument: { uri }, position: position(text.length), context: { triggerKind: rpc.InlineCompletionTriggerKind.Automatic },
  }, source.token).then(async (answer) => {
    answered++;
    const items = answer === null ? [] : Array.isArray(answer) ? answer : answer.items;
    if (items.length > 0) suggestions++;
    // Now and then accept a suggestion that is still current (Tab), as a user would.
    if (items.length > 0 && requestVersion === version && suggestions % 7 === 0) {
      const t = items[0].insertText;
      await edit(typeof t === 'string' ? t : t.value);
      accepted++;
    }
  }, (e) => {
    if (!(e instanceof rpc.ResponseError) || (e.code !== rpc.LSPErrorCodes.RequestCancelled && e.code !== rpc.LSPErrorCodes.ServerCancelled)) {
      errors++;
      console.error(`request failed: ${e.message}`);
    }
  }).finally(() => { outstanding--; });
}

const samples = [];
const start = Date.now();
let nextSample = 0;
let round = 0;
let queue = '';
while (Date.now() - start < seconds * 1000) {
  if (queue.length === 0) queue = SNIPPET(round++);
  const ch = queue[0];
  queue = queue.slice(1);
  await edit(ch);
  requestCompletion();
  // A pause at each line end (the user reads the suggestion), longer every few lines: requests get answered there.
  const pause = ch === '\n' ? (version % 5 === 0 ? 2500 : 1200) : KEY_INTERVAL_MS;
  await new Promise((r) => setTimeout(r, pause));
  const elapsed = (Date.now() - start) / 1000;
  if (elapsed >= nextSample) {
    const s = await status();
    const sample = {
      t: Math.round(elapsed), rssMB: +(s.rssBytes / 2 ** 20).toFixed(1), heapMB: +((s.heapUsedBytes ?? 0) / 2 ** 20).toFixed(1), pending: s.pendingRequests, active: s.activeGenerations,
      clientOutstanding: outstanding, docChars: text.length, requests, answered, suggestions,
    };
    samples.push(sample);
    console.log(`t=${String(sample.t).padStart(4)} s  rss ${String(sample.rssMB).padStart(6)} MB  heap ${String(sample.heapMB).padStart(5)} MB  pending ${sample.pending}  active ${sample.active}  ` +
      `client outstanding ${sample.clientOutstanding}  doc ${sample.docChars} chars  requests ${requests}  answered ${answered}  suggestions ${suggestions}`);
    nextSample += SAMPLE_S;
  }
}
lastSource?.cancel();
await new Promise((r) => setTimeout(r, 2000));
const final = await status();
try {
  await Promise.race([conn.sendRequest('shutdown'), new Promise((r) => setTimeout(r, 5000))]);
  await conn.sendNotification('exit');
} catch { /* gone */ }
conn.dispose();
setTimeout(() => server.kill('SIGKILL'), 3000).unref();

const at = (t) => samples.reduce((best, s) => (Math.abs(s.t - t) < Math.abs(best.t - t) ? s : best), samples[0]);
const firstMinute = samples.filter((s) => s.t >= 30 && s.t <= 90);
const lastMinute = samples.filter((s) => s.t >= seconds - 60);
const mean = (xs) => xs.reduce((a, s) => a + s.rssMB, 0) / Math.max(1, xs.length);
const summary = {
  seconds, keystrokes: version - 1, requests, answered, suggestions, accepted, errors,
  rssStartMB: samples[0]?.rssMB, rssHalfMB: at(seconds / 2)?.rssMB, rssEndMB: samples.at(-1)?.rssMB,
  rssFirstMinuteMeanMB: +mean(firstMinute.length ? firstMinute : samples).toFixed(1), rssLastMinuteMeanMB: +mean(lastMinute).toFixed(1),
  maxServerPending: Math.max(...samples.map((s) => s.pending)), maxClientOutstanding: maxOutstanding,
  finalPending: final.pendingRequests, finalActive: final.activeGenerations, counters: final.counters,
};
console.log(JSON.stringify(summary));
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ summary, samples }, null, 2));
const growth = summary.rssLastMinuteMeanMB - summary.rssFirstMinuteMeanMB;
const ok = summary.maxServerPending <= MAX_PENDING && summary.finalPending === 0 && growth <= MAX_GROWTH_MB && errors === 0;
if (!ok) console.error(`soak FAILED: max pending ${summary.maxServerPending}, final pending ${summary.finalPending}, RSS growth ${growth.toFixed(1)} MB, errors ${errors}\n${serverStderr.slice(-2000)}`);
process.exit(ok ? 0 : 1);
