/**
 * Remote mode end to end, over real HTTP on loopback: a `mixq serve` process with the fixture model, and language
 * servers (the editor's pipeline) with `backend: openai` pointed at it — directly, or through a fault-injecting
 * proxy (500s, connections cut mid-stream) — compared with a language server running the same model locally.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import type * as protocol from '#protocol';
import type { InlineCompletionItem, InlineCompletionList } from 'vscode-languageserver-protocol';
import { cliPath, tinyModelDir } from '../helpers';
import { ghostText, needsAddon, TestServer } from './lsp-client';

const SETTINGS: Partial<protocol.ServerSettings> = {
  modelPath: tinyModelDir, device: 'cpu', maxTokens: 48, timeCapMs: 20_000, debounceMs: 0, contextFromOpenFiles: false,
  prefetch: false, alternatives: 1,
};

/** A running `mixq serve` child process. */
class ServeProcess {
  readonly stderr: string[] = [];
  private constructor(readonly proc: ChildProcess, readonly url: string, readonly listening: string) {}

  static start(args: string[] = []): Promise<ServeProcess> {
    const proc = spawn(process.execPath, [cliPath, 'serve', '--model', tinyModelDir, '--device', 'cpu', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stderr: string[] = [];
    proc.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    return new Promise((resolve, reject) => {
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) {
          const s = new ServeProcess(proc, m[1], out.trim());
          s.stderr.push(...stderr);
          proc.stderr!.on('data', (d2: Buffer) => s.stderr.push(d2.toString()));
          resolve(s);
        }
      });
      proc.once('exit', (code) => reject(new Error(`mixq serve exited ${code}: ${stderr.join('')}`)));
    });
  }

  async stop(): Promise<number | null> {
    if (this.proc.exitCode !== null) return this.proc.exitCode;
    const exited = new Promise<number | null>((r) => this.proc.once('exit', (code) => r(code)));
    this.proc.kill('SIGTERM');
    return exited;
  }
}

/** One request to `url`; resolves with the status and the whole body. */
async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; json: { error?: { message: string } } & Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'application/json', ...headers } });
  return { status: res.status, json: await res.json() as { error?: { message: string } } };
}

/** Document text and cursor offset from a string with `|` at the cursor. */
function doc(marked: string): { text: string; offset: number } {
  return { text: marked.replace('|', ''), offset: marked.indexOf('|') };
}

function items(answer: InlineCompletionList | InlineCompletionItem[] | null): string[] {
  const list = answer === null ? [] : Array.isArray(answer) ? answer : answer.items;
  return list.map((i) => (typeof i.insertText === 'string' ? i.insertText : i.insertText.value));
}

const CASES = [
  { uri: 'file:///work/fib.py', lang: 'python', marked: 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    |\n\nprint(fibonacci(10))\n' },
  { uri: 'file:///work/debounce.js', lang: 'javascript', marked: 'function debounce(fn, wait) {\n  let timer = null;\n  return function (...args) {\n    |\n  };\n}\n' },
  { uri: 'file:///work/cfg.py', lang: 'python', marked: 'import os\n\n\nclass Config:\n    def __init__(self, path):\n        self.path = |\n' },
  { uri: 'file:///work/join.py', lang: 'python', marked: 'import os\n\nfor name in os.listdir(root):\n    full = os.path.join(|)\n' },
];

type ProxyMode = 'pass' | '500' | 'drop';

/** A loopback proxy in front of `target` that can answer 500 or cut the event stream after its first event. */
class FaultProxy {
  mode: ProxyMode = 'pass';
  readonly server: http.Server;
  constructor(private readonly target: string) {
    this.server = http.createServer((req, res) => {
      if (this.mode === '500') {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'injected failure' } }));
        return;
      }
      const up = http.request(`${this.target}${req.url}`, { method: req.method, headers: req.headers }, (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (this.mode === 'drop' && req.url === '/v1/completions') {
          upRes.once('data', (d: Buffer) => {
            res.write(d);
            setTimeout(() => res.socket?.destroy(), 20);
            upRes.destroy();
          });
          return;
        }
        upRes.pipe(res);
      });
      res.on('close', () => up.destroy());
      req.pipe(up);
    });
  }
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

describe('remote backend against a real mixq serve over HTTP', { skip: needsAddon }, () => {
  let serve: ServeProcess;
  let local: TestServer;
  let remote: TestServer;
  const expected = new Map<string, string>();
  before(async () => {
    serve = await ServeProcess.start();
    local = await TestServer.start(SETTINGS);
    remote = await TestServer.start({ ...SETTINGS, backend: 'openai', endpoint: serve.url });
    await local.waitFor((s) => s.state === 'ready' || s.state === 'error');
    await remote.waitFor((s) => s.state === 'ready' || s.state === 'error');
  });
  after(async () => {
    await local?.stop();
    await remote?.stop();
    assert.equal(await serve?.stop(), 0, 'mixq serve exits 0 on SIGTERM');
  });

  test('mixq serve binds loopback by default', () => {
    assert.match(serve.listening, /^listening on http:\/\/127\.0\.0\.1:\d+ \(model mixq-tiny-code, cpu/);
  });

  test('remote mode gives the same ghost text as local mode (greedy, fixture model)', async () => {
    const s = await remote.status();
    assert.equal(s.state, 'ready', s.message);
    assert.equal(s.model?.device, 'remote');
    assert.equal(s.model?.template, 'server');
    let nonEmpty = 0;
    for (const c of CASES) {
      const { text, offset } = doc(c.marked);
      await local.open(c.uri, text, c.lang);
      await remote.open(c.uri, text, c.lang);
      const want = ghostText(await local.complete(c.uri, offset));
      const got = ghostText(await remote.complete(c.uri, offset));
      assert.equal(got, want, `${c.uri}: remote ${JSON.stringify(got)} vs local ${JSON.stringify(want)}`);
      expected.set(c.uri, want);
      if (want) nonEmpty++;
    }
    assert.ok(nonEmpty >= 3, `${nonEmpty} of ${CASES.length} cases gave a suggestion`);
    const after = await remote.status();
    assert.equal(after.model?.name, 'mixq-tiny-code', 'the model name came from /v1/models');
    assert.equal(after.backendError, undefined);
    assert.equal(after.last?.fromCache, false);
  });

  test('alternatives on an explicit trigger: up to 3 different ones, the greedy one first; automatic triggers get one', async () => {
    for (const server of [local, remote]) await server.configure({ ...SETTINGS, alternatives: 3, ...(server === remote ? { backend: 'openai', endpoint: serve.url } : {}) });
    const c = CASES[0];
    const { offset } = doc(c.marked);
    const localAlts = items(await local.complete(c.uri, offset, true));
    const remoteAlts = items(await remote.complete(c.uri, offset, true));
    assert.ok(localAlts.length >= 2 && localAlts.length <= 3, `${localAlts.length} alternatives: ${JSON.stringify(localAlts)}`);
    assert.equal(new Set(localAlts).size, localAlts.length, 'all different');
    assert.equal(localAlts[0], expected.get(c.uri), 'the greedy suggestion first');
    assert.deepEqual(remoteAlts, localAlts, 'the same seeds give the same alternatives through mixq serve');
    assert.equal(items(await local.complete(c.uri, offset, false)).length, 1, 'an automatic trigger gets one suggestion');
    for (const server of [local, remote]) await server.configure({ ...SETTINGS, ...(server === remote ? { backend: 'openai', endpoint: serve.url } : {}) });
  });

  test('a 500 and a connection cut mid-stream show a clear status; completions recover', async () => {
    const proxy = new FaultProxy(serve.url);
    const url = await proxy.listen();
    const viaProxy = await TestServer.start({ ...SETTINGS, backend: 'openai', endpoint: url, remoteModel: 'mixq-tiny-code' });
    try {
      const c = CASES[0];
      const { text, offset } = doc(c.marked);
      await viaProxy.open(c.uri, text, c.lang);

      proxy.mode = '500';
      assert.deepEqual(items(await viaProxy.complete(c.uri, offset)), []);
      let s = await viaProxy.status();
      assert.equal(s.state, 'ready');
      assert.match(s.backendError ?? '', /HTTP 500 injected failure/);
      assert.ok(viaProxy.statuses.some((x) => x.backendError), 'mixq/statusChanged announced the failure');

      proxy.mode = 'pass';
      assert.equal(ghostText(await viaProxy.complete(c.uri, offset)), expected.get(c.uri));
      s = await viaProxy.status();
      assert.equal(s.backendError, undefined, 'a successful completion clears the failure');

      proxy.mode = 'drop';
      // Another state, so the cache cannot answer.
      await viaProxy.setText(c.uri, text.slice(0, offset) + 'r' + text.slice(offset));
      assert.deepEqual(items(await viaProxy.complete(c.uri, offset + 1)), []);
      s = await viaProxy.status();
      assert.match(s.backendError ?? '', /closed before the end of the stream|broke off/);

      proxy.mode = 'pass';
      assert.ok(items(await viaProxy.complete(c.uri, offset + 1)).length <= 1);
      assert.equal((await viaProxy.status()).backendError, undefined);
      assert.equal((await viaProxy.status()).counters.errors, 2);
    } finally {
      await viaProxy.stop();
      await proxy.close();
    }
  });

  test('an endpoint nobody listens on: the status says it cannot be reached', async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const server = await TestServer.start({ ...SETTINGS, backend: 'openai', endpoint: `http://127.0.0.1:${port}` });
    try {
      await server.open('file:///x.py', 'x = ');
      assert.deepEqual(items(await server.complete('file:///x.py', 4)), []);
      assert.match((await server.status()).backendError ?? '', new RegExp(`cannot reach http://127.0.0.1:${port}: ECONNREFUSED`));
    } finally {
      await server.stop();
    }
  });

  test('mixq serve: malformed requests get 400 with a reason, unknown routes 404, oversized bodies 413', async () => {
    const api = `${serve.url}/v1/completions`;
    const notJson = await post(api, '{"prompt": ');
    assert.equal(notJson.status, 400);
    assert.match(notJson.json.error!.message, /^the body is not valid JSON/);
    const noPrompt = await post(api, JSON.stringify({ max_tokens: 4 }));
    assert.equal(noPrompt.status, 400);
    assert.equal(noPrompt.json.error!.message, 'prompt is missing');
    assert.equal((noPrompt.json.error as unknown as { param: string }).param, 'prompt');
    const badTokens = await post(api, JSON.stringify({ prompt: 'x', max_tokens: -3 }));
    assert.equal(badTokens.status, 400);
    assert.equal(badTokens.json.error!.message, 'max_tokens must be from 1 to 1024, got -3');
    const tooLong = await post(api, JSON.stringify({ prompt: 'x = 1\n'.repeat(3000), max_tokens: 1024 }));
    assert.equal(tooLong.status, 400);
    assert.match(tooLong.json.error!.message, /exceeds the context of \d+ tokens/);
    const wrongModel = await post(api, JSON.stringify({ prompt: 'x', model: 'gpt-4' }));
    assert.equal(wrongModel.status, 404);
    const route = await fetch(`${serve.url}/v1/chat/completions`, { method: 'POST', body: '{}' });
    assert.equal(route.status, 404);
    const method = await fetch(api);
    assert.equal(method.status, 405);
    assert.equal(method.headers.get('allow'), 'POST');
    const big = await post(api, JSON.stringify({ prompt: 'a'.repeat(2 << 20) }));
    assert.equal(big.status, 413);
    assert.match(big.json.error!.message, /more than the limit of 1048576/);
    // A chunked body (no Content-Length) is counted as it arrives.
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = http.request(api, { method: 'POST', headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      for (let i = 0; i < 40; i++) req.write('x'.repeat(64 << 10));
      req.end();
    });
    assert.equal(chunked, 413);
    // Still serving.
    const ok = await post(api, JSON.stringify({ prompt: 'def add(a, b):\n    ', max_tokens: 8, temperature: 0 }));
    assert.equal(ok.status, 200);
    assert.equal((ok.json.choices as Array<{ text: string }>).length, 1);
  });
});

describe('mixq serve: one generation at a time, a queue limit, cancel on disconnect', { skip: needsAddon }, () => {
  test('429 with a reason when the queue is full; closing the connection stops the running generation', async () => {
    const serve = await ServeProcess.start(['--queue', '0']);
    try {
      const api = `${serve.url}/v1/completions`;
      const controller = new AbortController();
      const long = await fetch(api, {
        method: 'POST', signal: controller.signal,
        body: JSON.stringify({ prompt: 'import os\n', max_tokens: 1000, temperature: 0, stream: true, ignore_eos: true }),
      });
      assert.equal(long.status, 200);
      assert.equal(long.headers.get('content-type'), 'text/event-stream');
      const reader = long.body!.getReader();
      await reader.read(); // the first event: it is generating

      const busy = await post(api, JSON.stringify({ prompt: 'x', max_tokens: 4 }));
      assert.equal(busy.status, 429);
      assert.match(busy.json.error!.message, /^busy: one generation running and 0 waiting \(the queue limit is 0\)/);
      const health = await (await fetch(`${serve.url}/health`)).json() as { running: number };
      assert.equal(health.running, 1, '/health answers while generating');

      controller.abort();
      const t0 = Date.now();
      while (!serve.stderr.join('').includes('the client disconnected')) {
        assert.ok(Date.now() - t0 < 10_000, `no disconnect seen: ${serve.stderr.join('')}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const stopped = /stopped after (\d+) tokens/.exec(serve.stderr.join(''));
      assert.ok(stopped && Number(stopped[1]) < 1000, `the generation stopped early: ${stopped?.[0]}`);
      const after = await post(api, JSON.stringify({ prompt: 'x', max_tokens: 4, temperature: 0 }));
      assert.equal(after.status, 200, 'the next request is served');
    } finally {
      assert.equal(await serve.stop(), 0);
    }
  });
});
