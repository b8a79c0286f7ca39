/**
 * The profile's shared views (protocol/src/profile.ts): the table (share, GB/s vs the ceiling, sorting), the CSV,
 * the Chrome trace writer (parses, well-formed and ordered events, one pid per device, one tid per stream, named), the
 * last decode step's timeline; the server's ProfileHost (epochs, the on/off choice kept over reloads); and the
 * profiler webview's page (its Content-Security-Policy).
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';

import * as P from '#protocol';
import type * as protocol from '#protocol';
import type * as htmlModule from '../../extension/src/profilerHtml';
import type * as modelModule from '../../server/src/completion/model';
import type * as profilingModule from '../../server/src/profiling';
import type * as nativeModule from '../../server/src/native';
import { repoRoot, serverModule } from '../helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { profilerHtml, profilerCsp, makeNonce } = require(path.join(repoRoot, 'out', 'extension', 'profilerHtml')) as typeof htmlModule;
const { ProfileHost } = serverModule<typeof profilingModule>('profiling');

const ev = (name: string, startUs: number, durUs: number, stream = 0): protocol.ProfileEvent => ({ name, stream, startUs, durUs });

/** Two devices: a CPU with one stream, a GPU with two; two decode steps after a prefill. */
function sample(): protocol.ProfileData {
  return {
    enabled: true,
    epoch: 'test.1',
    model: 'mixtral test',
    ceilings: { copyGBps: { 'cpu:0': 20 } },
    steps: [ev('prefill', 1000, 500), ev('decode', 2000, 100), ev('decode', 3000, 100)],
    devices: [
      {
        device: 'cpu:0', kind: 'cpu', backend: 'cpu:0 (AVX2, 2 threads)', droppedEvents: 0,
        kernels: [
          { name: 'linear', calls: 3, totalUs: 300, bytes: 3_000_000 },
          { name: 'rms_norm', calls: 2, totalUs: 100, bytes: 0 },
        ],
        events: [ev('linear', 1010, 100), ev('rms_norm', 2001, 10), ev('linear', 3001, 50), ev('rms_norm', 3060, 20)],
      },
      {
        device: 'cuda:0', kind: 'cuda', backend: 'cuda:0 test GPU', droppedEvents: 7,
        kernels: [{ name: 'gemv_w4a16, "fused"', calls: 4, totalUs: 40, bytes: 4_000_000 }],
        events: [ev('gemv_w4a16, "fused"', 3010, 10, 1), ev('gemv_w4a16, "fused"', 3020, 10, 2), ev('gemv_w4a16, "fused"', 2010, 10, 1)],
      },
    ],
  };
}

test('table rows: share of the device, mean, GB/s where bytes are known, the device ceiling', () => {
  const rows = P.profileRows(sample());
  assert.deepEqual(rows.map((r) => [r.device, r.kernel]), [['cpu:0', 'linear'], ['cpu:0', 'rms_norm'], ['cuda:0', 'gemv_w4a16, "fused"']]);
  const [linear, norm, gemv] = rows;
  assert.equal(linear.share, 0.75);
  assert.equal(norm.share, 0.25);
  assert.equal(gemv.share, 1);
  assert.equal(linear.totalMs, 0.3);
  assert.equal(linear.meanUs, 100);
  assert.equal(linear.gbps, 10); // 3 MB in 300 µs
  assert.equal(norm.gbps, null);
  assert.equal(linear.ceilingGBps, 20);
  assert.equal(gemv.ceilingGBps, null, 'no GPU ceiling measured');
  assert.deepEqual(P.sortRows(rows, 'gbps', true).map((r) => r.kernel), ['gemv_w4a16, "fused"', 'linear', 'rms_norm'], 'unknown GB/s last');
  assert.deepEqual(P.sortRows(rows, 'gbps', false).map((r) => r.kernel), ['linear', 'gemv_w4a16, "fused"', 'rms_norm'], 'unknown GB/s last');
  assert.deepEqual(P.sortRows(rows, 'calls', false).map((r) => r.calls), [2, 3, 4]);
  assert.deepEqual(P.sortRows(rows, 'kernel', false).map((r) => r.kernel)[0], 'gemv_w4a16, "fused"');
});

test('CSV: header, one line per row, quoting of commas and quotes, empty unknowns', () => {
  const csv = P.profileCsv(P.profileRows(sample()));
  const lines = csv.split('\r\n');
  assert.equal(lines[0], 'device,kernel,calls,total_ms,mean_us,share,gb_per_s,copy_gb_per_s');
  assert.equal(lines[1], 'cpu:0,linear,3,0.3,100,0.75,10,20');
  assert.equal(lines[2], 'cpu:0,rms_norm,2,0.1,50,0.25,,20');
  assert.equal(lines[3], 'cuda:0,"gemv_w4a16, ""fused""",4,0.04,10,1,100,');
  assert.equal(lines[4], '');
});

test('Chrome trace: parses; complete events ordered by ts, in µs from the first; one pid per device, one tid per stream, named', () => {
  const trace = JSON.parse(JSON.stringify(P.chromeTrace(sample()))) as P.ChromeTrace;
  const spans = trace.traceEvents.filter((e) => e.ph === 'X');
  const meta = trace.traceEvents.filter((e) => e.ph === 'M');
  assert.equal(spans.length, 3 + 4 + 3);
  assert.ok(spans.every((e, i) => i === 0 || e.ts! >= spans[i - 1].ts!));
  assert.equal(spans[0].ts, 0, 'the first event (the prefill) starts the trace');
  assert.deepEqual(spans.find((e) => e.name === 'linear'), { name: 'linear', cat: 'cpu', ph: 'X', pid: 1, tid: 0, ts: 10, dur: 100 });
  assert.deepEqual([...new Set(spans.filter((e) => e.cat === 'cuda').map((e) => `${e.pid}/${e.tid}`))].sort(), ['2/1', '2/2']);
  const names = Object.fromEntries(meta.filter((e) => e.name === 'process_name').map((e) => [e.pid, e.args!.name]));
  assert.deepEqual(names, { 1: 'cpu:0 cpu:0 (AVX2, 2 threads)', 2: 'cuda:0 cuda:0 test GPU', 3: 'forward passes' });
  const threads = meta.filter((e) => e.name === 'thread_name').map((e) => `${e.pid}/${e.tid}=${e.args!.name}`).sort();
  assert.deepEqual(threads, ['1/0=stream 0', '2/1=stream 1', '2/2=stream 2', '3/0=eval']);
  assert.equal(trace.displayTimeUnit, 'ms');
  assert.deepEqual(P.chromeTrace(P.emptyProfile('x')).traceEvents, []);
});

test('timeline: the most recent decode step, one track per device and stream, only its events', () => {
  const t = P.lastStepTimeline(sample())!;
  assert.equal(t.step.startUs, 3000);
  assert.deepEqual(t.tracks.map((tr) => [tr.device, tr.stream, tr.events.map((e) => e.startUs)]), [
    ['cpu:0', 0, [3001, 3060]],
    ['cuda:0', 1, [3010]],
    ['cuda:0', 2, [3020]],
  ]);
  assert.equal(P.lastStepTimeline({ ...sample(), steps: [ev('prefill', 0, 1)] }), undefined);
});

test('issue-9 JSON: devices with kernels (calls, total_ms, mean_us; bytes and gbps when known), ceilings', () => {
  const j = P.profileJson(sample());
  assert.deepEqual(j.devices[0].kernels[0], { name: 'linear', calls: 3, total_ms: 0.3, mean_us: 100, bytes: 3_000_000, gbps: 10 });
  assert.deepEqual(j.devices[0].kernels[1], { name: 'rms_norm', calls: 2, total_ms: 0.1, mean_us: 50 });
  assert.deepEqual(j.ceilings, { copy_gbps: { 'cpu:0': 20 } });
  assert.equal(j.devices[1].kind, 'cuda');
});

test('ProfileHost: the on/off choice follows model reloads, each reload and reset is a new epoch', async () => {
  const switched: boolean[] = [];
  const native: nativeModule.NativeProfile = { enabled: false, devices: [], steps: [] };
  const fake = (name: string): modelModule.CompletionModel => ({
    info: { description: name, devices: ['cpu:0', 'cpu:1'] },
    profiling: {
      vocabSize: 100,
      setProfiling: (on: boolean) => { switched.push(on); native.enabled = on; },
      profile: () => native,
      resetProfile: () => undefined,
      copyBandwidth: async () => 12.5,
    },
  }) as unknown as modelModule.CompletionModel;
  const host = new ProfileHost();
  const none = host.current();
  assert.deepEqual([none.enabled, none.devices], [false, []]);
  host.attach(fake('a'));
  const a = host.current();
  assert.notEqual(a.epoch, none.epoch);
  assert.equal(host.enable(true).enabled, true);
  await host.measureCeilings();
  assert.deepEqual(host.current().ceilings.copyGBps, { 'cpu:0': 12.5, 'cpu:1': 12.5 });
  host.attach(fake('b'));
  assert.deepEqual(switched, [true, true], 'the new model is switched on too');
  assert.notEqual(host.current().epoch, a.epoch);
  const e = host.current().epoch;
  assert.notEqual(host.reset().epoch, e);
  host.attach(undefined);
  assert.equal(host.current().enabled, true, 'the choice stays while no model is loaded');
  await assert.rejects(host.runBenchmark({ prefillTokens: 1, decodeTokens: 1 }, { onProgress: () => undefined, onCancel: () => undefined }), /no model/);
});

test('ProfileHost: GPU devices get their own GPU\'s copy ceiling, logical devices their physical GPU\'s', async () => {
  const asked: (string | undefined)[] = [];
  const native: nativeModule.NativeProfile = { enabled: false, devices: [], steps: [] };
  const model = {
    info: { description: 'm', devices: ['cuda:0', 'cuda:0/1', 'cuda:1'] },
    profiling: {
      vocabSize: 100,
      setProfiling: () => undefined,
      profile: () => native,
      resetProfile: () => undefined,
      copyBandwidth: async (_mib: number, device?: string) => { asked.push(device); return device === undefined ? 20 : device === 'cuda:0' ? 3000 : 2900; },
    },
  } as unknown as modelModule.CompletionModel;
  const host = new ProfileHost();
  host.attach(model);
  host.enable(true);
  await host.measureCeilings();
  assert.deepEqual(asked, [undefined, 'cuda:0', 'cuda:1'], 'the host once, each physical GPU once');
  assert.deepEqual(host.current().ceilings.copyGBps, { 'cuda:0': 3000, 'cuda:0/1': 3000, 'cuda:1': 2900 });
  assert.match(host.current().ceilings.method ?? '', /within GPU memory/);
});

test('webview page: strict CSP (nothing by default, the script by nonce only, no remote or inline source)', () => {
  const nonce = makeNonce();
  assert.ok(nonce.length >= 22 && nonce !== makeNonce(), 'fresh 128-bit nonces');
  const cspSource = 'https://file+.vscode-resource.vscode-cdn.net';
  const html = profilerHtml({
    cspSource, nonce,
    scriptUri: `${cspSource}/ext/dist/webview/profiler.js`,
    styleUri: `${cspSource}/ext/dist/webview/profiler.css`,
  });
  const meta = /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/.exec(html);
  assert.ok(meta, 'the page declares a CSP');
  const csp = meta[1].replace(/&#39;|&apos;/g, "'");
  const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v]));
  assert.deepEqual(directives['default-src'], ["'none'"]);
  assert.deepEqual(directives['script-src'], [`'nonce-${nonce}'`], 'scripts by nonce only');
  for (const [name, sources] of Object.entries(directives)) {
    for (const s of sources) {
      assert.ok(!["'unsafe-inline'", "'unsafe-eval'", '*', 'https:', 'http:'].includes(s), `${name} allows ${s}`);
      assert.ok(!/^https?:/.test(s) || s === cspSource, `${name} allows the remote source ${s}`);
    }
  }
  assert.equal(csp, profilerCsp(cspSource, nonce));
  const scripts = [...html.matchAll(/<script\b([^>]*)>/g)].map((m) => m[1]);
  assert.equal(scripts.length, 1);
  assert.match(scripts[0], new RegExp(`nonce="${nonce.replace(/[+/]/g, '\\$&')}"`));
  assert.match(scripts[0], /src="https:\/\/file\+\.vscode-resource\.vscode-cdn\.net\/ext\/dist\/webview\/profiler\.js"/);
  assert.ok(!/<script\b[^>]*>[^<\s]/.test(html), 'no inline script');
  assert.ok(!/\sstyle="/.test(html) && !/<style\b/.test(html), 'no inline style');
  assert.ok(!/\son[a-z]+="/.test(html), 'no inline handlers');
  const urls = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
  assert.ok(urls.every((u) => u.startsWith(`${cspSource}/ext/dist/webview/`)), `only the extension's files: ${urls.join(', ')}`);
});
