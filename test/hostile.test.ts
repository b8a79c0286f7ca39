// Hostile input (issue 15), the Node side: model folders whose tokenizer files are FIFOs or devices, a tokenizer
// that does not belong to its model, out-of-range flags, and quantization stopped by a signal or killed outright.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';

import type * as calibrationModule from '../server/src/cli/calibration';
import type * as engineModule from '../server/src/engine';
import type * as tokenizerModule from '../server/src/tokenizer';
import type * as tokenizerThreadModule from '../server/src/tokenizerThread';
import { cliPath, largeTokenizerModel, repoRoot, serverModule, tinyModelDir } from './helpers';

const { Engine } = serverModule<typeof engineModule>('engine');
const { MixqTokenizer } = serverModule<typeof tokenizerModule>('tokenizer');
const { ThreadTokenizer } = serverModule<typeof tokenizerThreadModule>('tokenizerThread');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-hostile-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of the fixture model of symlinks; `replace` swaps one file for a FIFO, a link or new content. */
function modelCopy(tag: string): string {
  const dir = fs.mkdtempSync(path.join(tmp, `${tag}-`));
  for (const f of fs.readdirSync(tinyModelDir)) fs.symlinkSync(path.join(tinyModelDir, f), path.join(dir, f));
  return dir;
}

function mkfifo(file: string): void {
  fs.rmSync(file, { force: true });
  const r = spawnSync('mkfifo', [file]);
  assert.equal(r.status, 0, 'mkfifo');
}

function mixq(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('tokenizer.json / tokenizer_config.json that are FIFOs or /dev/zero are refused at once, naming the file', async () => {
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
    const fifo = modelCopy('fifo');
    mkfifo(path.join(fifo, file));
    const t0 = Date.now();
    assert.throws(() => MixqTokenizer.load(fifo), (e: Error) => e.message.includes(path.join(fifo, file)) && /FIFO/.test(e.message));
    await assert.rejects(ThreadTokenizer.load(fifo), /FIFO \(named pipe\), not a regular file/);
    await assert.rejects(Engine.load(fifo, { threads: 1 }), /FIFO/);
    assert.ok(Date.now() - t0 < 10_000, 'no hang');

    const zero = modelCopy('zero');
    fs.rmSync(path.join(zero, file));
    fs.symlinkSync('/dev/zero', path.join(zero, file));
    await assert.rejects(ThreadTokenizer.load(zero), (e: Error) => e.message.includes(path.join(zero, file)) && /character device/.test(e.message));
  }
});

test('quantize --calib naming a FIFO or /dev/zero is refused at once', () => {
  const { readCalibrationDocuments } = serverModule<typeof calibrationModule>('cli/calibration');
  const fifo = path.join(tmp, 'calib.jsonl');
  mkfifo(fifo);
  assert.throws(() => readCalibrationDocuments(fifo), /calib\.jsonl: is a FIFO/);
  assert.throws(() => readCalibrationDocuments('/dev/zero'), /\/dev\/zero: is a character device/);
});

test('CLI input files (--prompt-file, --file, ppl --ids-file) that are FIFOs are refused, not read forever', () => {
  const fifo = path.join(tmp, 'input.fifo');
  mkfifo(fifo);
  const prompt = mixq('generate', '--model', tinyModelDir, '--prompt-file', fifo, '--max-tokens', '1');
  assert.notEqual(prompt.code, 0);
  assert.match(prompt.stderr, /input\.fifo: is a FIFO/);
  const complete = mixq('complete', '--model', tinyModelDir, '--file', fifo);
  assert.notEqual(complete.code, 0);
  assert.match(complete.stderr, /input\.fifo: is a FIFO/);
});

test('a tokenizer with ids beyond config.json vocab_size fails at load, naming both files', async () => {
  const dir = modelCopy('vocab');
  const tok = JSON.parse(fs.readFileSync(path.join(tinyModelDir, 'tokenizer.json'), 'utf8')) as { added_tokens: object[] };
  tok.added_tokens.push({ id: 9000, content: '<beyond>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  fs.rmSync(path.join(dir, 'tokenizer.json'));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tok));
  await assert.rejects(Engine.load(dir, { threads: 1 }), (e: Error) =>
    e.message.includes(path.join(dir, 'tokenizer.json')) && e.message.includes(path.join(dir, 'config.json')) && /vocab_size 8192/.test(e.message));
});

const threadCount = (): number => fs.readdirSync('/proc/self/task').length;

test('a tokenizer load that takes too long is abandoned: the error names the file, its thread ends', async () => {
  const { dir } = largeTokenizerModel(tmp, 200_000, 10);
  await (await ThreadTokenizer.load(tinyModelDir)).dispose();  // warm-up: threads started once per process
  const before = threadCount();
  const t0 = Date.now();
  await assert.rejects(ThreadTokenizer.load(dir, { timeoutMs: 300 }),
    (e: Error) => e.message.includes(path.join(dir, 'tokenizer.json')) && /took longer than 0\.3 s; abandoned/.test(e.message));
  assert.ok(Date.now() - t0 < 2000, `rejected after ${Date.now() - t0} ms`);
  for (let i = 0; i < 100 && threadCount() > before; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(threadCount(), before, 'the abandoned load\'s thread was terminated');
  // Through the engine: the weights, loaded beside it, are freed again; the same folder loads without the time box.
  await assert.rejects(Engine.load(dir, { threads: 1, tokenizerTimeoutMs: 300 }), /took longer than 0\.3 s/);
  const engine = await Engine.load(dir, { threads: 1 });
  assert.deepEqual(engine.tokenizer!.encode('def f(x):'), MixqTokenizer.load(tinyModelDir).encode('def f(x):'));
  await engine.dispose();
});

test('--threads and --max-tokens beyond their maximum name the flag and the maximum', () => {
  const threads = mixq('generate', '--model', tinyModelDir, '--prompt', 'x', '--threads', '100000');
  assert.equal(threads.code, 2, threads.stderr);
  assert.match(threads.stderr, /--threads: 100000 is above the maximum 256/);
  const maxTokens = mixq('generate', '--model', tinyModelDir, '--prompt', 'x', '--max-tokens', '1e12');
  assert.equal(maxTokens.code, 2, maxTokens.stderr);
  assert.match(maxTokens.stderr, /--max-tokens: 1e12 is above the maximum 1048576/);
});

test('the engine refuses 100000 threads with the maximum in the message (no crash)', async () => {
  await assert.rejects(Engine.load(tinyModelDir, { threads: 100000 }), /threads.*100000.*at most 256/);
  const e = await Engine.load(tinyModelDir, { threads: 2 });
  assert.equal(e.info.threads, 2);
  await e.dispose();
});

test('quantize stopped by SIGTERM or SIGHUP: exit 130, no OUT and no OUT.tmp-* left', async () => {
  for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
    const out = path.join(tmp, `q-${signal}`);
    const child = spawn(process.execPath, [cliPath, 'quantize', tinyModelDir, out, '--calib', path.join(repoRoot, 'server', 'src'),
      '--samples', '32', '--seq-len', '128', '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let sent = false;
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!sent && /layer 1\/4/.test(stderr)) {
        sent = true;
        child.kill(signal);
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.ok(sent, `the signal was sent (stderr: ${stderr})`);
    assert.equal(code, 130, stderr);
    assert.match(stderr, new RegExp(`cancelled by ${signal}`));
    const left = fs.readdirSync(tmp).filter((n) => n.startsWith(`q-${signal}`));
    assert.deepEqual(left, [], 'neither OUT nor OUT.tmp-* exists');
  }
});

test('quantize removes OUT.tmp-* of a run that was killed, keeps those of live or foreign runs', () => {
  const out = path.join(tmp, 'q-stale');
  // A process that has exited: its pid is gone (pids are not reused this fast).
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  const stale = `${out}.tmp-Ab12Cd`;
  fs.mkdirSync(stale);
  fs.writeFileSync(path.join(stale, 'model-00001-of-00006.safetensors'), 'partial');
  fs.writeFileSync(path.join(stale, '.mixq-owner'), `${dead} ${os.hostname()}\n`);
  const live = `${out}.tmp-Ef34Gh`;
  fs.mkdirSync(live);
  fs.writeFileSync(path.join(live, '.mixq-owner'), `${process.pid} ${os.hostname()}\n`);
  const foreign = `${out}.tmp-Ij56Kl`;
  fs.mkdirSync(foreign);
  const r = mixq('quantize', tinyModelDir, out, '--method', 'rtn', '--threads', '1');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`removed ${stale.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, the temporary folder of a quantization whose process is gone`));
  assert.ok(!fs.existsSync(stale), 'the dead run\'s folder is gone');
  assert.ok(fs.existsSync(live) && fs.existsSync(foreign), 'a live run\'s folder and one without an owner file stay');
  assert.ok(!fs.existsSync(path.join(out, '.mixq-owner')), 'the owner file does not end up in OUT');
});
