#!/usr/bin/env node
// Completion latency over a scripted typing session, measured through the real language server (out/server/server.js,
// `npm run build` first) over JSON-RPC, as VS Code drives it: every keystroke sends didChange + an automatic
// textDocument/inlineCompletion request and cancels the previous request ($/cancelRequest).
//
// Prints: request→response latency p50/p95 of answered requests, split into waiting (debounce + engine busy),
// prompt evaluation and generation (server-reported); prompt tokens evaluated per model request and per keystroke;
// cancellations, cache hits; server process RSS.
//
//   node scripts/bench-completion.mjs [--model DIR] [--device cpu] [--ms-per-char 120] [--no-prefetch] [--json]
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const lsp = require('vscode-languageserver-protocol/node');
const protocol = require(path.join(root, 'out', 'server', 'protocol.js'));

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const modelDir = path.resolve(opt('model', path.join(root, 'models', 'mixq-tiny-code')));
const device = opt('device', 'cpu');
const msPerChar = Number(opt('ms-per-char', '120'));
/** Extra pause after a newline (reading, thinking), ms. */
const msPerLine = Number(opt('ms-per-line', '600'));

// What the scripted user types, character by character, into an initially short file (indentation typed as-is).
const HEADER = 'import os\nimport sys\n\n\n';
const SESSION = [
  'def read_lines(path):\n',
  '    with open(path) as f:\n',
  '        return f.readlines()\n',
  '\n\n',
  'def count_words(lines):\n',
  '    total = 0\n',
  '    for line in lines:\n',
  '        total += len(line.split())\n',
  '    return total\n',
  '\n\n',
  'def main(argv):\n',
  '    if len(argv) < 2:\n',
  '        print("usage: count FILE")\n',
  '        return 1\n',
  '    lines = read_lines(argv[1])\n',
  '    print(count_words(lines))\n',
  '    return 0\n',
].join('');
const FOOTER = '\n\nif __name__ == "__main__":\n    sys.exit(main(sys.argv))\n';

function quantile(values, q) {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i];
}
const fmt = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '-');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const proc = spawn(process.execPath, [path.join(root, 'out', 'server', 'server.js'), '--stdio'], { stdio: ['pipe', 'pipe', 'inherit'] });
const conn = lsp.createProtocolConnection(new lsp.StreamMessageReader(proc.stdout), new lsp.StreamMessageWriter(proc.stdin));
const timings = [];
let lastKey = '';
let maxRss = 0;
conn.onNotification(protocol.StatusChangedNotification, (s) => {
  maxRss = Math.max(maxRss, s.rssBytes);
  if (s.last) {
    const key = JSON.stringify(s.last);
    if (key !== lastKey) {
      lastKey = key;
      timings.push(s.last);
    }
  }
});
conn.onNotification('window/logMessage', () => undefined);
conn.listen();

await conn.sendRequest(lsp.InitializeRequest.type, {
  processId: process.pid, rootUri: null, capabilities: {},
  initializationOptions: { settings: { modelPath: modelDir, device, contextFromOpenFiles: false, prefetch: !args.includes('--no-prefetch') } },
});
await conn.sendNotification(lsp.InitializedNotification.type, {});
let status;
for (;;) {
  status = await conn.sendRequest(protocol.StatusRequest);
  if (status.state === 'ready' || status.state === 'error') break;
  await sleep(50);
}
if (status.state !== 'ready') {
  console.error(`model did not load: ${status.message}`);
  process.exit(1);
}
const rssAfterLoad = status.rssBytes;

const uri = 'file:///bench/count.py';
let typed = '';
let version = 1;
const text = () => HEADER + typed + FOOTER;
await conn.sendNotification(lsp.DidOpenTextDocumentNotification.type, { textDocument: { uri, languageId: 'python', version, text: text() } });
await conn.sendRequest(protocol.ResetCountersRequest);
timings.length = 0;

const answered = []; // client-side request → response ms of requests that were answered
let cancelledResponses = 0;
let previous;
const pending = [];
const t0 = performance.now();
/** Line/character of the end of `s` (the cursor after typing it). */
const endOf = (s) => {
  const lines = s.split('\n');
  return { line: lines.length - 1, character: lines[lines.length - 1].length };
};
for (const ch of SESSION) {
  const insertAt = endOf(HEADER + typed);
  typed += ch;
  version++;
  const position = endOf(HEADER + typed);
  // An incremental change, as VS Code sends it.
  await conn.sendNotification(lsp.DidChangeTextDocumentNotification.type, {
    textDocument: { uri, version },
    contentChanges: [{ range: { start: insertAt, end: insertAt }, text: ch }],
  });
  previous?.cancel();
  const source = new lsp.CancellationTokenSource();
  previous = source;
  const sentAt = performance.now();
  pending.push(conn.sendRequest(lsp.InlineCompletionRequest.type, {
    textDocument: { uri }, position, context: { triggerKind: lsp.InlineCompletionTriggerKind.Automatic },
  }, source.token).then(
    () => answered.push(performance.now() - sentAt),
    () => cancelledResponses++,
  ));
  await sleep(ch === '\n' ? msPerLine : msPerChar);
}
await Promise.all(pending);
const sessionMs = performance.now() - t0;
await sleep(100); // the last statusChanged notification
status = await conn.sendRequest(protocol.StatusRequest);
maxRss = Math.max(maxRss, status.rssBytes);

const typingTimings = [...timings];
const typingStatus = status;

// Phase 2: a user who accepts each suggestion with Tab after reading it for `msReading`; VS Code then asks again at
// the new cursor. Measures the latency of that next suggestion (a prefetch hit when prefetch is on).
const msReading = Number(opt('ms-reading', '400'));
const acceptRounds = Number(opt('accept-rounds', '12'));
const acceptUri = 'file:///bench/accept.py';
let acceptText = 'import os\nimport sys\n\n\ndef list_files(root):\n    ';
let acceptVersion = 1;
await conn.sendNotification(lsp.DidOpenTextDocumentNotification.type, { textDocument: { uri: acceptUri, languageId: 'python', version: 1, text: acceptText } });
const afterAccept = [];
let fromPrefetch = 0;
const ask = async () => {
  const position = endOf(acceptText);
  const t = performance.now();
  const r = await conn.sendRequest(lsp.InlineCompletionRequest.type, {
    textDocument: { uri: acceptUri }, position, context: { triggerKind: lsp.InlineCompletionTriggerKind.Automatic },
  });
  const items = r === null ? [] : Array.isArray(r) ? r : r.items;
  return { ms: performance.now() - t, text: items.length > 0 ? items[0].insertText : '' };
};
await conn.sendRequest(protocol.ResetCountersRequest);
let shown = await ask();
for (let round = 0; round < acceptRounds && shown.text; round++) {
  await sleep(msReading);
  acceptText += shown.text;
  acceptVersion++;
  await conn.sendNotification(lsp.DidChangeTextDocumentNotification.type, { textDocument: { uri: acceptUri, version: acceptVersion }, contentChanges: [{ text: acceptText }] });
  shown = await ask();
  afterAccept.push(shown.ms);
}
const acceptStatus = await conn.sendRequest(protocol.StatusRequest);
fromPrefetch = acceptStatus.counters.prefetchHits;
maxRss = Math.max(maxRss, acceptStatus.rssBytes);
status = typingStatus;

const model = typingTimings.filter((t) => !t.fromCache);
const cached = typingTimings.filter((t) => t.fromCache);
const c = status.counters;
const row = (name, values) => `  ${name.padEnd(28)} p50 ${fmt(quantile(values, 0.5)).padStart(8)}   p95 ${fmt(quantile(values, 0.95)).padStart(8)}   mean ${fmt(values.reduce((a, b) => a + b, 0) / values.length).padStart(8)}`;
const result = {
  date: new Date().toISOString(),
  model: status.model?.description,
  template: status.model?.template,
  keystrokes: SESSION.length,
  msPerChar,
  msPerLine,
  sessionSeconds: sessionMs / 1000,
  requests: c.requests,
  answered: answered.length,
  modelAnswers: model.length,
  cacheHits: c.cacheHits,
  cancelled: c.cancelled,
  cancelledWhileGenerating: c.cancelledGenerating,
  stale: c.staleVersion,
  emptyAfterPostprocess: c.empty,
  prefetched: c.prefetched,
  prefetchHits: c.prefetchHits,
  latencyMs: {
    clientP50: quantile(answered, 0.5), clientP95: quantile(answered, 0.95),
    totalP50: quantile(model.map((t) => t.totalMs), 0.5), totalP95: quantile(model.map((t) => t.totalMs), 0.95),
    waitP50: quantile(model.map((t) => t.waitMs), 0.5), waitP95: quantile(model.map((t) => t.waitMs), 0.95),
    prefillP50: quantile(model.map((t) => t.prefillMs), 0.5), prefillP95: quantile(model.map((t) => t.prefillMs), 0.95),
    decodeP50: quantile(model.map((t) => t.decodeMs), 0.5), decodeP95: quantile(model.map((t) => t.decodeMs), 0.95),
    cacheHitP50: quantile(cached.map((t) => t.totalMs), 0.5),
  },
  promptTokensEvaluatedPerModelRequest: { p50: quantile(model.map((t) => t.evaluatedPromptTokens), 0.5), p95: quantile(model.map((t) => t.evaluatedPromptTokens), 0.95), promptP50: quantile(model.map((t) => t.promptTokens), 0.5) },
  tokensEvaluatedPerKeystroke: c.evaluatedTokens / SESSION.length,
  generatedTokensPerSecondP50: quantile(model.map((t) => t.tokensPerSec), 0.5),
  maxCancelToStopMs: c.maxCancelToStopMs,
  rssMiB: { afterLoad: rssAfterLoad / 2 ** 20, max: maxRss / 2 ** 20 },
  afterAcceptMs: { rounds: afterAccept.length, p50: quantile(afterAccept, 0.5), p95: quantile(afterAccept, 0.95), fromPrefetch, prefetched: acceptStatus.counters.prefetched },
};

if (args.includes('--json')) {
  console.log(JSON.stringify(result, null, 2));
} else {
  console.log(`MixQ completion benchmark — ${result.date}`);
  console.log(`model: ${result.model} (template ${result.template}); ${result.keystrokes} keystrokes at ${msPerChar} ms/char, +${msPerLine} ms per line, ${fmt(result.sessionSeconds)} s`);
  console.log(`requests ${c.requests}: answered ${answered.length} (model ${model.length}, cache ${c.cacheHits}; ${c.empty} empty after post-processing), cancelled ${c.cancelled} (${c.cancelledGenerating} while generating), stale ${c.staleVersion}`);
  console.log(`prefetch ${args.includes('--no-prefetch') ? 'off' : 'on'}: ${c.prefetched} suggestions computed ahead, ${c.prefetchHits} cache answers from them (this user types its own text, never Tab)`);
  console.log('latency of answered model requests, ms (server-side split):');
  console.log(row('client, all answered (+cache)', answered));
  console.log(row('total (server)', model.map((t) => t.totalMs)));
  console.log(row('  waiting (debounce+engine)', model.map((t) => t.waitMs)));
  console.log(row('  prompt evaluation', model.map((t) => t.prefillMs)));
  console.log(row('  generation', model.map((t) => t.decodeMs)));
  console.log(row('  other (tokenize, post)', model.map((t) => t.otherMs)));
  console.log(row('cache hits, total', cached.map((t) => t.totalMs)));
  console.log('tokens:');
  console.log(row('prompt tokens', model.map((t) => t.promptTokens)));
  console.log(row('prompt tokens evaluated', model.map((t) => t.evaluatedPromptTokens)));
  console.log(row('generated tokens', model.map((t) => t.generatedTokens)));
  console.log(row('generation tokens/s', model.map((t) => t.tokensPerSec)));
  console.log(`  tokens run through the model per keystroke (prompt + decode, all requests): ${fmt(result.tokensEvaluatedPerKeystroke, 2)}`);
  console.log(`  longest cancel → engine stopped: ${fmt(c.maxCancelToStopMs)} ms`);
  console.log(`accepting with Tab after ${msReading} ms of reading, ${afterAccept.length} rounds: next suggestion after ` +
    `p50 ${fmt(quantile(afterAccept, 0.5))} ms, p95 ${fmt(quantile(afterAccept, 0.95))} ms (${fromPrefetch} answered from a prefetch)`);
  console.log(`server RSS: ${fmt(result.rssMiB.afterLoad)} MiB after load, ${fmt(result.rssMiB.max)} MiB max`);
}

await conn.sendRequest('shutdown').catch(() => undefined);
await conn.sendNotification('exit').catch(() => undefined);
conn.dispose();
setTimeout(() => proc.kill(), 2000).unref();
