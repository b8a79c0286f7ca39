// `mixq profile` end to end on the bundled model: the issue-9 JSON lists every op of the forward pass with calls > 0
// and the copy-bandwidth ceiling; --trace writes a Chrome Trace Event file that parses, with well-formed complete
// events ordered by ts, one pid per device and one tid per stream, named by metadata; --csv writes the table.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';

import { cliPath, tinyModelDir } from './helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-profile-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const FORWARD_OPS = ['embed', 'rms_norm', 'linear', 'rope', 'attention', 'router', 'moe_experts', 'moe_combine', 'add'];

interface Kernel { name: string; calls: number; total_ms: number; mean_us: number; bytes?: number; gbps?: number }
interface Out {
  devices: { name: string; kind: string; backend: string; total_ms: number; kernels: Kernel[] }[];
  ceilings: { copy_gbps: Record<string, number> };
  run: { decode_tokens: number; prefill_tokens: number };
}
interface TraceEvent { name: string; ph: string; pid: number; tid: number; ts?: number; dur?: number; args?: Record<string, unknown> }

function mixq(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('mixq profile --json --trace --csv over two virtual CPU devices', () => {
  const trace = path.join(tmp, 'trace.json');
  const csv = path.join(tmp, 'table.csv');
  const r = mixq('profile', '--model', tinyModelDir, '--prefill', '24', '--decode', '6', '--threads', '2',
    '--devices', 'cpu:0,cpu:1', '--json', '--trace', trace, '--csv', csv);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Out;
  assert.deepEqual(out.devices.map((d) => [d.name, d.kind]), [['cpu:0', 'cpu'], ['cpu:1', 'cpu']]);
  assert.equal(out.run.prefill_tokens, 24);
  for (const op of FORWARD_OPS) {
    const total = out.devices.reduce((s, d) => s + (d.kernels.find((k) => k.name === op)?.calls ?? 0), 0);
    assert.ok(total > 0, `${op} listed with calls > 0`);
  }
  for (const d of out.devices) {
    assert.ok(out.ceilings.copy_gbps[d.name] > 0, `${d.name} has a copy ceiling`);
    for (const k of d.kernels) {
      assert.ok(k.calls > 0 && k.total_ms > 0, `${d.name} ${k.name}`);
      assert.ok(Math.abs(k.mean_us - (k.total_ms * 1000) / k.calls) < 1e-6 * k.mean_us + 1e-9, `${k.name} mean = total / calls`);
      if (k.bytes !== undefined) assert.ok(k.gbps! > 0);
    }
    const linear = d.kernels.find((k) => k.name === 'linear');
    assert.ok(linear && linear.bytes! > 0, `${d.name} linear has its bytes`);
    assert.ok(Math.abs(d.total_ms - d.kernels.reduce((s, k) => s + k.total_ms, 0)) < 1e-9);
  }
  // The benchmark: 1 prefill pass + 6 decode passes, one embedding each (on the embedding's device).
  assert.equal(out.devices.reduce((s, d) => s + (d.kernels.find((k) => k.name === 'embed')?.calls ?? 0), 0), 7);

  const t = JSON.parse(fs.readFileSync(trace, 'utf8')) as { traceEvents: TraceEvent[] };
  assert.ok(Array.isArray(t.traceEvents));
  const spans = t.traceEvents.filter((e) => e.ph === 'X');
  const meta = t.traceEvents.filter((e) => e.ph === 'M');
  assert.equal(spans.length + meta.length, t.traceEvents.length, 'only complete events and metadata');
  for (const e of spans) {
    assert.ok(typeof e.name === 'string' && e.name.length > 0 && Number.isInteger(e.pid) && Number.isInteger(e.tid), JSON.stringify(e));
    assert.ok(Number.isFinite(e.ts) && e.ts! >= 0 && Number.isFinite(e.dur) && e.dur! >= 0, JSON.stringify(e));
  }
  assert.ok(spans.every((e, i) => i === 0 || e.ts! >= spans[i - 1].ts!), 'complete events ordered by ts');
  const processName = new Map(meta.filter((e) => e.name === 'process_name').map((e) => [e.pid, String(e.args!.name)]));
  assert.match(processName.get(1)!, /^cpu:0 /);
  assert.match(processName.get(2)!, /^cpu:1 /);
  assert.equal(processName.get(3), 'forward passes');
  const threads = new Set(meta.filter((e) => e.name === 'thread_name').map((e) => `${e.pid}/${e.tid}`));
  for (const e of spans) assert.ok(threads.has(`${e.pid}/${e.tid}`), `thread ${e.pid}/${e.tid} is named`);
  assert.deepEqual([...new Set(spans.map((e) => e.pid))].sort(), [1, 2, 3]);
  assert.equal(spans.filter((e) => e.pid === 3 && e.name === 'decode').length, 6);
  // Every op of a device runs inside a forward pass.
  const steps = spans.filter((e) => e.pid === 3);
  for (const e of spans.filter((x) => x.pid !== 3)) {
    assert.ok(steps.some((s) => e.ts! >= s.ts! - 1e-3 && e.ts! + e.dur! <= s.ts! + s.dur! + 1e-2), `${e.name} at ${e.ts} inside a step`);
  }

  const lines = fs.readFileSync(csv, 'utf8').trimEnd().split('\r\n');
  assert.equal(lines[0], 'device,kernel,calls,total_ms,mean_us,share,gb_per_s,copy_gb_per_s');
  assert.equal(lines.length - 1, out.devices.reduce((s, d) => s + d.kernels.length, 0));
  for (const line of lines.slice(1)) {
    const f = line.split(',');
    assert.equal(f.length, 8, line);
    const k = out.devices.find((d) => d.name === f[0])!.kernels.find((x) => x.name === f[1])!;
    assert.equal(Number(f[2]), k.calls);
  }
});

test('mixq profile: usage errors', () => {
  assert.equal(mixq('profile').code, 2);
  assert.equal(mixq('profile', '--model', tinyModelDir, '--decode', '0').code, 2);
  assert.match(mixq('profile', '--help').stdout, /--trace <file\.json>/);
});
