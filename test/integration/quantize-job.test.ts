/**
 * Quantization from recipes and as a server job, with the bundled fixture model:
 *  - `mixq quantize --recipe` writes the same bytes as the same settings given as flags (RTN, 0.2 s); a flag beside
 *    the recipe overrides it; an existing output is refused, replaced only with --overwrite, nothing else left;
 *  - mixq/quantize in the server (AWQ, cancelled in its second layer): progress, a second job refused, inline
 *    completions answered during the job and after it, the cancel honoured within a second, and no output, no
 *    temporary folder, no created parent left behind;
 *  - the calibration set tokenized on a worker thread: mixq/status answered while ~1 M calibration tokens are
 *    tokenized, and a cancel in that phase honoured within a second.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';

import { CancellationTokenSource } from 'vscode-languageserver-protocol/node';

import * as P from '#protocol';
import type * as protocol from '#protocol';
import { cliPath, repoRoot, tinyModelDir } from '../helpers';
import { ghostText, needsAddon, TestServer } from './lsp-client';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-qjob-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function mixq(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', cwd: tmp });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file of a folder → its bytes, by relative name. */
function tree(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of fs.readdirSync(dir).sort()) out.set(name, fs.readFileSync(path.join(dir, name)));
  return out;
}

describe('mixq quantize --recipe', { skip: needsAddon }, () => {
  test('a recipe writes the same bytes as the same settings given as flags', () => {
    const recipe = path.join(tmp, 'rtn.mixq.toml');
    fs.writeFileSync(recipe, `source = ${JSON.stringify(tinyModelDir)}\noutput = "from-recipe"\n\n[quant]\nmethod = "rtn"\ngroup_size = 64\nzero_point = false\n`);
    const a = mixq('quantize', '--recipe', recipe, '--json');
    assert.equal(a.code, 0, a.stderr);
    const b = mixq('quantize', tinyModelDir, path.join(tmp, 'from-flags'), '--method', 'rtn', '--group-size', '64', '--symmetric', '--json');
    assert.equal(b.code, 0, b.stderr);
    const ja = JSON.parse(a.stdout) as Record<string, unknown>;
    assert.equal(ja.outputDir, path.join(tmp, 'from-recipe'));
    assert.deepEqual([ja.method, ja.groupSize, ja.zeroPoint], ['rtn', 64, false]);
    const ra = tree(path.join(tmp, 'from-recipe'));
    const rb = tree(path.join(tmp, 'from-flags'));
    assert.deepEqual([...ra.keys()], [...rb.keys()]);
    assert.ok(ra.has('model.safetensors.index.json') && ra.size >= 4, [...ra.keys()].join(','));
    for (const [name, bytes] of ra) assert.ok(bytes.equals(rb.get(name)!), `${name} differs`);

    // A flag beside the recipe overrides it: --group-size 128 and SRC OUT positionals.
    const c = mixq('quantize', '--recipe', recipe, tinyModelDir, path.join(tmp, 'g128'), '--group-size', '128', '--json');
    assert.equal(c.code, 0, c.stderr);
    assert.equal((JSON.parse(c.stdout) as { groupSize: number }).groupSize, 128);
    const config = JSON.parse(fs.readFileSync(path.join(tmp, 'g128', 'config.json'), 'utf8')) as { quantization_config: { group_size: number; zero_point: boolean } };
    assert.deepEqual([config.quantization_config.group_size, config.quantization_config.zero_point], [128, false]);
  });

  test('an existing output is refused without overwrite, replaced with --overwrite; no temporary folder is left', () => {
    const recipe = path.join(tmp, 'over.mixq.toml');
    fs.writeFileSync(recipe, `source = ${JSON.stringify(tinyModelDir)}\noutput = "kept"\n[quant]\nmethod = "rtn"\n`);
    fs.mkdirSync(path.join(tmp, 'kept'));
    fs.writeFileSync(path.join(tmp, 'kept', 'mine.txt'), 'precious');
    const refused = mixq('quantize', '--recipe', recipe);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /kept already exists; set overwrite = true in the recipe \(or pass --overwrite\)/);
    assert.equal(fs.readFileSync(path.join(tmp, 'kept', 'mine.txt'), 'utf8'), 'precious');

    const replaced = mixq('quantize', '--recipe', recipe, '--overwrite');
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.match(replaced.stdout, /replacing the old one/);
    assert.ok(!fs.existsSync(path.join(tmp, 'kept', 'mine.txt')));
    assert.ok(fs.existsSync(path.join(tmp, 'kept', 'model.safetensors.index.json')));
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => /\.(tmp|mixq-new|mixq-old)-/.test(n)), []);

    const broken = path.join(tmp, 'broken.mixq.toml');
    fs.writeFileSync(broken, `source = ${JSON.stringify(tinyModelDir)}\noutput = "x"\n[quant]\ngroup_size = 96\n`);
    const bad = mixq('quantize', '--recipe', broken);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /broken\.mixq\.toml:4:14: quant\.group_size: 96 is not a valid group size/);
  });
});

describe('the server\'s quantize job', { skip: needsAddon }, () => {
  test('AWQ cancelled in layer 2: completions answered during and after, a second job refused, cancel < 1 s, nothing left', async () => {
    const server = await TestServer.start({
      modelPath: tinyModelDir, device: 'cpu', threads: 1, maxTokens: 8, timeCapMs: 20_000, debounceMs: 0, contextFromOpenFiles: false, prefetch: false,
    });
    try {
      const ready = await server.waitFor((s) => s.state === 'ready' || s.state === 'error');
      assert.equal(ready.state, 'ready', ready.message);
      const uri = 'file:///work/job.py';
      let text = 'def add(a, b):\n    ';
      await server.open(uri, text);

      const progress: protocol.QuantizeProgress[] = [];
      server.conn.onNotification(P.QuantizeProgressNotification, (p: protocol.QuantizeProgress) => {
        progress.push(p);
      });
      // A parent that does not exist yet: created for the job, removed when it is cancelled.
      const parent = path.join(tmp, 'new-parent');
      const output = path.join(parent, 'awq-out');
      const cts = new CancellationTokenSource();
      const params: protocol.QuantizeParams = {
        settings: { source: tinyModelDir, output, method: 'awq', groupSize: 128, calibPath: path.join(repoRoot, 'server', 'src'), samples: 16, seqLen: 256 },
      };
      let settled = false;
      const job = server.conn.sendRequest(P.QuantizeRequest, params, cts.token).finally(() => {
        settled = true;
      });
      job.catch(() => undefined);

      const until = async (pred: () => boolean, what: string, ms = 120_000): Promise<void> => {
        const t0 = Date.now();
        while (!pred()) {
          if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}; progress ${JSON.stringify(progress.at(-1))}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await until(() => progress.some((p) => p.layers === 4 && p.phase !== 'calibration'), 'the native quantizer to start');

      await assert.rejects(server.conn.sendRequest(P.QuantizeRequest, params), /A quantization job is already running \(.* → .*awq-out, /);

      // Completions during the job: answered (the quantizer is on the addon's worker threads).
      text += 'return a + b\n\ndef mul(a, b):\n    ';
      await server.setText(uri, text);
      const t0 = Date.now();
      const during = await server.complete(uri, text.length);
      const duringMs = Date.now() - t0;
      assert.notEqual(ghostText(during), '', 'a suggestion during the job');
      assert.equal(settled, false, 'the job was still running when the completion came back');

      await until(() => progress.some((p) => p.layer >= 1 && p.phase !== 'load'), 'layer 2');
      const cancelAt = Date.now();
      cts.cancel();
      await assert.rejects(job, (e: Error & { code?: number }) => e.code === -32800 && /cancelled/.test(e.message));
      const cancelMs = Date.now() - cancelAt;
      assert.ok(cancelMs < 1000, `cancel took ${cancelMs} ms`);
      assert.ok(!fs.existsSync(parent), 'the parent created for the job is gone');
      assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith('new-parent')), []);

      // After the job: completions still answered, and a new job may start.
      text += 'return a * b\n\ndef sub(a, b):\n    ';
      await server.setText(uri, text);
      assert.notEqual(ghostText(await server.complete(uri, text.length)), '', 'a suggestion after the job');
      const last = progress.at(-1)!;
      console.log(`  job progress events ${progress.length}, last ${last.phase} layer ${last.layer + 1}/${last.layers}; completion during ${duringMs} ms; cancel ${cancelMs} ms`);
      const cancelNone = await server.conn.sendRequest(P.QuantizeCancelRequest);
      assert.equal(cancelNone.cancelled, false);
      const check = await server.conn.sendRequest(P.CheckQuantizeSourceRequest, { path: path.join(tmp) });
      assert.equal(check.ok, false);
      assert.match(check.reason ?? '', /no config\.json/);
    } finally {
      await server.stop();
    }
  });

  test('calibration is tokenized off the event loop: status answered meanwhile, a cancel in that phase < 1 s', async () => {
    const server = await TestServer.start({
      modelPath: tinyModelDir, device: 'cpu', threads: 1, maxTokens: 8, timeCapMs: 20_000, debounceMs: 0, contextFromOpenFiles: false, prefetch: false,
    });
    try {
      const ready = await server.waitFor((s) => s.state === 'ready' || s.state === 'error');
      assert.equal(ready.state, 'ready', ready.message);
      // ~5 MB of documents: 256 × 512 samples draw on up to 8 × 131072 tokens, seconds of tokenization.
      const source = fs.readFileSync(path.join(repoRoot, 'server', 'src', 'completion', 'service.ts'), 'utf8');
      const calib = path.join(tmp, 'large-calibration.jsonl');
      fs.writeFileSync(calib, Array.from({ length: 300 }, (_, i) => JSON.stringify({ text: `# document ${i}\n${source}` })).join('\n'));
      const progress: protocol.QuantizeProgress[] = [];
      server.conn.onNotification(P.QuantizeProgressNotification, (p: protocol.QuantizeProgress) => {
        progress.push(p);
      });
      const output = path.join(tmp, 'calib-cancelled');
      const cts = new CancellationTokenSource();
      const params: protocol.QuantizeParams = {
        settings: { source: tinyModelDir, output, method: 'awq', groupSize: 128, calibPath: calib, samples: 256, seqLen: 512 },
      };
      const job = server.conn.sendRequest(P.QuantizeRequest, params, cts.token);
      job.catch(() => undefined);
      const t0 = Date.now();
      let worst = 0;
      let answered = 0;
      while (Date.now() - t0 < 1000) {
        const s0 = Date.now();
        await server.status();
        worst = Math.max(worst, Date.now() - s0);
        answered++;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(progress.length > 0 && progress.every((p) => p.phase === 'calibration' && p.layers === 0),
        `still calibrating when cancelled: ${JSON.stringify(progress.at(-1))}`);
      const cancelAt = Date.now();
      cts.cancel();
      await assert.rejects(job, (e: Error & { code?: number }) => e.code === -32800 && /cancelled/.test(e.message));
      const cancelMs = Date.now() - cancelAt;
      console.log(`  calibration phase: ${answered} mixq/status answered in 1 s, slowest ${worst} ms; cancel ${cancelMs} ms`);
      assert.ok(worst < 500, `mixq/status answered within 0.5 s while tokenizing (slowest ${worst} ms)`);
      assert.ok(cancelMs < 1000, `cancel took ${cancelMs} ms`);
      assert.ok(progress.every((p) => p.layers === 0), 'the native quantizer never started');
      assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith('calib-cancelled')), [], 'no output, no temporary folder');
      // The server is ready for the next job.
      assert.equal((await server.conn.sendRequest(P.QuantizeCancelRequest)).cancelled, false);
    } finally {
      await server.stop();
    }
  });
});
