/**
 * The real language server process over JSON-RPC with the bundled fixture model (models/mixq-tiny-code, CPU).
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import type * as modelModule from '../../server/src/completion/model';
import type * as postprocessModule from '../../server/src/completion/postprocess';
import type * as promptModule from '../../server/src/completion/prompt';
import type * as templatesModule from '../../server/src/completion/templates';
import type * as engineModule from '../../server/src/engine';
import type * as protocol from '#protocol';
import type * as tokenizerModule from '../../server/src/tokenizer';
import { serverModule, tinyModelDir } from '../helpers';
import { ghostText, needsAddon, TestServer } from './lsp-client';

// Prefetch off except in its own test: the other tests look at the engine right after an answer.
const SETTINGS: Partial<protocol.ServerSettings> = {
  modelPath: tinyModelDir, device: 'cpu', maxTokens: 48, timeCapMs: 20_000, debounceMs: 30, contextFromOpenFiles: false,
  prefetch: false, alternatives: 1,
};

/** Document text and cursor offset from a string with `|` at the cursor. */
function doc(marked: string): { text: string; offset: number } {
  return { text: marked.replace('|', ''), offset: marked.indexOf('|') };
}

describe('language server over JSON-RPC', { skip: needsAddon }, () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start(SETTINGS);
    await server.waitFor((s) => s.state === 'ready' || s.state === 'error');
  });
  after(async () => {
    await server?.stop();
  });

  test('the model is loaded with the SPM template', async () => {
    const s = await server.status();
    assert.equal(s.state, 'ready', s.message);
    assert.equal(s.model?.template, 'starcoder-spm');
    assert.equal(s.model?.name, 'mixq-tiny-code');
    assert.ok(server.statuses.some((x) => x.state === 'ready'), 'mixq/statusChanged announced the ready state');
  });

  test('ghost text equals the engine\'s greedy continuation of the same prompt, post-processed', async () => {
    const { Engine } = serverModule<typeof engineModule>('engine');
    const { EngineCompletionModel } = serverModule<typeof modelModule>('completion/model');
    const { buildPrompt } = serverModule<typeof promptModule>('completion/prompt');
    const { chooseTemplate } = serverModule<typeof templatesModule>('completion/templates');
    const { postprocess, postprocessContext } = serverModule<typeof postprocessModule>('completion/postprocess');
    const engine = await Engine.load(tinyModelDir, { device: 'cpu' });
    try {
      const model = new EngineCompletionModel(engine);
      const template = chooseTemplate('auto', model.vocab).template;
      const stopIds = [...template.stopTokens.map((n) => model.markerId(n)).filter((id): id is number => id !== undefined), model.eosId!];
      const cases = [
        { uri: 'file:///work/fib.py', lang: 'python', marked: 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    |\n\nprint(fibonacci(10))\n' },
        { uri: 'file:///work/debounce.js', lang: 'javascript', marked: 'function debounce(fn, wait) {\n  let timer = null;\n  return function (...args) {\n    |\n  };\n}\n' },
        { uri: 'file:///work/cfg.py', lang: 'python', marked: 'import os\n\n\nclass Config:\n    def __init__(self, path):\n        self.path = |\n' },
        { uri: 'file:///work/join.py', lang: 'python', marked: 'import os\n\nfor name in os.listdir(root):\n    full = os.path.join(|)\n' },
      ];
      let nonEmpty = 0;
      for (const c of cases) {
        const { text, offset } = doc(c.marked);
        await server.open(c.uri, text, c.lang);
        const answer = ghostText(await server.complete(c.uri, offset));
        const status = await server.status();

        const prompt = buildPrompt(model, template, { uri: c.uri, languageId: c.lang, text, offset },
          { maxPrefixTokens: 1024, maxSuffixTokens: 256, snippetShare: 0 });
        const direct = await engine.generate({ prompt: prompt.ids, maxTokens: SETTINGS.maxTokens!, greedy: true, stopIds }).result;
        const expected = postprocess(model.decode(direct.tokens), postprocessContext(text, offset, [])).text;
        assert.equal(answer, expected, `${c.uri}: server ${JSON.stringify(answer)} vs engine ${JSON.stringify(expected)}`);
        assert.equal(status.last?.promptTokens, prompt.ids.length, 'the server built the same prompt');
        if (answer.length > 0) nonEmpty++;
      }
      assert.ok(nonEmpty >= 3, `${nonEmpty} of ${cases.length} cases gave a suggestion`);
    } finally {
      await engine.dispose();
    }
  });

  test('after a completion, the next keystroke evaluates only a few prompt tokens (KV cache reuse)', async () => {
    const uri = 'file:///work/kv.py';
    const { text, offset } = doc('import sys\n\n\ndef main(argv):\n    """Entry point."""\n    args = parse(argv)\n    if args.verbose:\n        pri|\n\n\nif __name__ == "__main__":\n    main(sys.argv)\n');
    await server.open(uri, text);
    const first = ghostText(await server.complete(uri, offset));
    // Type a character that is not the start of the suggestion (so the cache cannot answer).
    const typed = first.startsWith('n') ? 'x' : 'n';
    await server.setText(uri, text.slice(0, offset) + typed + text.slice(offset));
    await server.complete(uri, offset + 1);
    const last = (await server.status()).last!;
    assert.equal(last.fromCache, false);
    assert.ok(last.promptTokens > 40, `prompt of ${last.promptTokens} tokens`);
    assert.ok(last.evaluatedPromptTokens <= 3, `evaluated ${last.evaluatedPromptTokens} of ${last.promptTokens} prompt tokens`);
    assert.equal(last.reusedTokens, last.promptTokens - last.evaluatedPromptTokens);
  });

  test('a burst of 50 edits, each followed by a request: all but the last cancelled, nothing left running', async () => {
    // At the top level at the end of a file nothing ends a suggestion early: the first generation runs long enough
    // for the burst to hit it inside the engine.
    const uri = 'file:///work/burst.py';
    const base = 'import os\nimport sys\n\n\n';
    await server.open(uri, base);
    await server.configure({ ...SETTINGS, maxTokens: 256 });
    await server.resetCounters();
    // Settled records attached at once: a rejection (cancellation) must not go unhandled while the loop runs.
    const answers: Array<Promise<PromiseSettledResult<unknown>>> = [];
    const line = '# Read the configuration file and return its values as a dictionary.';
    for (let i = 0; i < 50; i++) {
      const typed = line.slice(0, i + 1);
      await server.setText(uri, base + typed);
      answers.push(server.complete(uri, base.length + typed.length, false).then(
        (value) => ({ status: 'fulfilled', value }) as const,
        (reason: unknown) => ({ status: 'rejected', reason }) as const,
      ));
      // The first request is let through to the engine; the other keystrokes follow 5 ms apart.
      if (i === 0) await server.waitFor((st) => st.activeGenerations === 1, 10_000);
      else await new Promise((r) => setTimeout(r, 5));
    }
    const settled = await Promise.all(answers);
    const cancelled = settled.filter((r) => r.status === 'rejected');
    assert.equal(cancelled.length, 49);
    for (const r of cancelled) assert.match(String((r as PromiseRejectedResult).reason?.message), /cancelled/);
    assert.equal(settled[49].status, 'fulfilled');
    const s = await server.status();
    assert.equal(s.activeGenerations, 0);
    assert.equal(s.pendingRequests, 0);
    assert.equal(s.counters.requests, 50);
    assert.equal(s.counters.cancelled, 49);
    assert.ok(s.counters.cancelledGenerating >= 1, `cancelled while generating: ${s.counters.cancelledGenerating}`);
    // The engine polls the cancel flag before every token: it stops within one decode step (~2 ms here, idle).
    assert.ok(s.counters.maxCancelToStopMs < 250, `engine stopped ${s.counters.maxCancelToStopMs.toFixed(1)} ms after cancel`);
    await server.configure(SETTINGS);
  });

  test('prefetch: after a suggestion, the one that follows accepting it is ready in the cache', async () => {
    const uri = 'file:///work/prefetch.py';
    const { text, offset } = doc('import os\n\n\ndef list_python_files(root):\n    |');
    await server.open(uri, text);
    await server.configure({ ...SETTINGS, prefetch: true });
    await server.resetCounters();
    const shown = ghostText(await server.complete(uri, offset, false));
    assert.ok(shown.length > 0);
    const idle = await server.waitFor((s) => s.counters.prefetched === 1 && s.activeGenerations === 0, 20_000);
    assert.equal(idle.counters.requests, 1, 'a prefetch is not a request');
    // Tab: the suggestion is inserted; VS Code asks again at the new cursor.
    await server.setText(uri, text.slice(0, offset) + shown + text.slice(offset));
    const next = ghostText(await server.complete(uri, offset + shown.length, false));
    const s = await server.status();
    assert.equal(s.last?.stop, 'cache_exact');
    assert.equal(s.counters.prefetchHits, 1);
    assert.ok(next.length > 0);
    await server.configure(SETTINGS);
  });

  test('mixq/status is answered while a completion is generating', async () => {
    const uri = 'file:///work/busy.py';
    const { text, offset } = doc('class Stack:\n    def __init__(self):\n        self.items = []\n\n    |');
    await server.open(uri, text);
    await server.configure({ ...SETTINGS, maxTokens: 200 });
    let done = false;
    const pending = server.complete(uri, offset).finally(() => {
      done = true;
    });
    const during = await server.waitFor((s) => s.activeGenerations === 1 || done, 20_000);
    assert.equal(done, false, 'status answered before the completion finished');
    assert.equal(during.activeGenerations, 1);
    await pending;
    await server.configure(SETTINGS);
  });

  test('settings apply while running: the FIM template switches without reloading the model', async () => {
    const uri = 'file:///work/template.py';
    const { text, offset } = doc('def square(x):\n    return |\n');
    await server.open(uri, text);
    const { MixqTokenizer } = serverModule<typeof tokenizerModule>('tokenizer');
    const tok = MixqTokenizer.load(tinyModelDir);
    const pieces = (t: string) => tok.encode(t, { addSpecialTokens: false }).length;
    const fimLength = 3 + pieces(text.slice(0, offset)) + pieces(text.slice(offset));
    for (const fimTemplate of ['starcoder-psm', 'prefix-only', 'auto'] as const) {
      await server.configure({ ...SETTINGS, fimTemplate });
      const s = await server.waitFor((st) => st.model?.template === (fimTemplate === 'auto' ? 'starcoder-spm' : fimTemplate), 10_000);
      assert.equal(s.state, 'ready');
      await server.complete(uri, offset);
      const last = (await server.status()).last!;
      // prefix-only: BOS + the prefix, no suffix; the FIM layouts: 3 markers, the prefix and the suffix.
      assert.equal(last.promptTokens, fimTemplate === 'prefix-only' ? 1 + pieces(text.slice(0, offset)) : fimLength);
    }
  });

  test('a model that fails to load says why; completions stay off; switching back works without restart', async () => {
    const uri = 'file:///work/switch.py';
    await server.open(uri, 'x = ');
    const bad = await server.loadModel({ modelPath: path.join(tinyModelDir, 'no-such-model') });
    assert.equal(bad.ok, false);
    assert.match(bad.error ?? '', /no-such-model/);
    assert.match(bad.error ?? '', /not found/);
    assert.equal(bad.status.state, 'error');
    assert.equal(await server.complete(uri, 4), null);
    const good = await server.loadModel({ modelPath: tinyModelDir });
    assert.equal(good.ok, true, good.error);
    assert.equal(good.status.model?.name, 'mixq-tiny-code');
  });

  test('mixq.devices / mixq.placement reload the model; mixq/status names the devices; the same suggestion', async () => {
    const uri = 'file:///work/placed.py';
    const { text, offset } = doc('def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    |\n');
    await server.open(uri, text);
    const before = await server.status();
    assert.ok(before.model?.devices && before.model.devices.length === 1, `one device: ${JSON.stringify(before.model?.devices)}`);
    assert.deepEqual(before.model.placement?.devices.map((d) => d.name), before.model.devices);
    const single = ghostText(await server.complete(uri, offset));

    // A reload builds a new completion service: its counters start at zero (a completion preceded each change).
    const reloaded = (st: protocol.ServerStatus): boolean => st.state === 'ready' && st.counters.requests === 0;
    for (const placement of ['layer', 'expert'] as const) {
      await server.configure({ ...SETTINGS, devices: ['cpu:0', 'cpu:1'], placement });
      const s = await server.waitFor(reloaded, 60_000);
      // An addon from before the placement planner ignores the devices and reports its one device.
      if (s.model?.placement?.mode !== 'single') {
        assert.equal(s.model?.placement?.mode, placement);
        assert.deepEqual(s.model?.devices, ['cpu:0', 'cpu:1']);
      }
      assert.equal(ghostText(await server.complete(uri, offset)), single, `${placement}: the same greedy suggestion as one device`);
    }
    await server.configure({ ...SETTINGS, devices: [], placement: 'layer' });
    const back = await server.waitFor(reloaded, 60_000);
    assert.equal(back.model?.devices?.length, 1);
  });
});

describe('language server without a model', { skip: needsAddon }, () => {
  test('says no model is configured and answers completions with nothing', async () => {
    const server = await TestServer.start({ modelPath: '' });
    try {
      const s = await server.waitFor((x) => x.state !== 'loading');
      assert.equal(s.state, 'noModel');
      assert.match(s.message ?? '', /Select Model/);
      await server.open('file:///work/a.py', 'x = ');
      assert.equal(await server.complete('file:///work/a.py', 4), null);
    } finally {
      await server.stop();
    }
  });
});
