/** Golden tests of the quality filters (server/src/completion/filters.ts) as post-processing applies them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as filtersModule from '../../server/src/completion/filters';
import type * as postprocessModule from '../../server/src/completion/postprocess';
import type * as serviceModule from '../../server/src/completion/service';
import { serverModule } from '../helpers';
import { FakeModel } from './fake-model';

const { postprocess, postprocessContext } = serverModule<typeof postprocessModule>('completion/postprocess');
const { CompletionService } = serverModule<typeof serviceModule>('completion/service');
const { bracketContext, inferIndentStyle, repetitionCut, scanBrackets } = serverModule<typeof filtersModule>('completion/filters');

/** Context from a document with `|` marking the cursor. */
function at(doc: string, stops: string[] = []): postprocessModule.PostprocessContext {
  const offset = doc.indexOf('|');
  return postprocessContext(doc.replace('|', ''), offset, stops);
}

test('repetition: the same three lines three times (the real-editor screenshot) keep the first copy', () => {
  const ctx = at('def fibonacci(n):\n    |');
  const three = 'a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    ';
  const raw = three.repeat(3) + 'return a\n';
  const r = postprocess(raw, ctx);
  assert.deepEqual(r, { text: 'a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b', rule: 'repetition', final: true });
  // Decided as soon as the second copy's last line is complete: the stream can stop there.
  const secondCopyDone = three.repeat(2).length - '    '.length;
  assert.equal(postprocess(raw.slice(0, secondCopyDone - 1), ctx).final, false);
  assert.equal(postprocess(raw.slice(0, secondCopyDone), ctx).final, true);
});

test('repetition: a repeated line, and a repeated block separated by blank lines, keep the first', () => {
  const ctx = at('total = 0\n|');
  assert.deepEqual(postprocess('total += 1\ntotal += 1\ntotal += 1\n', ctx), { text: 'total += 1', rule: 'repetition', final: true });
  const block = 'def a():\n    return 1\n\n';
  assert.equal(postprocess(block + block + 'x', at('|')).text, 'def a():\n    return 1');
  // The cursor's line counts with what is before the cursor on it.
  assert.deepEqual(postprocess(' 1\nx = 1\ny = 2\n', at('x =|')), { text: ' 1', rule: 'repetition', final: true });
  // … but a document line alone is not the suggestion's: repeating it once is not a repetition, twice is.
  const afterLine = at("root = os.path.join(root, 'a')|");
  assert.equal(postprocess("\nroot = os.path.join(root, 'a')\nroot = os.path.join(root, 'a')\n", afterLine).text, "\nroot = os.path.join(root, 'a')");
});

test('repetition: closing-punctuation lines may follow equal ones; different lines never cut', () => {
  assert.equal(repetitionCut('  }\n  }\n', ''), undefined);
  assert.equal(repetitionCut('a\nb\nc\nd\n', ''), undefined);
  assert.deepEqual(repetitionCut('a\nb\na\nb\n', ''), { at: 3, period: 2 });
  // Incomplete last line: not decided yet.
  assert.equal(repetitionCut('a\nb\na\nb', ''), undefined);
});

test('closing brackets the text after the cursor closes already end the suggestion', () => {
  // `)` right of the cursor closes the call: the model's own `)` and what follows it are dropped.
  assert.deepEqual(postprocess('b), c', at('call(a, |)\n')), { text: 'b', rule: 'bracket', final: false });
  assert.equal(postprocess('b) * 2\n', at('x = (a + |)\n')).text, 'b');
  // Multi-line: a closer of a block the suffix closes; final once its line is complete.
  const js = at('const o = {\n  a: 1,\n  |\n};\n');
  assert.deepEqual(postprocess('b: 2 };', js), { text: 'b: 2', rule: 'bracket', final: false });
  assert.deepEqual(postprocess('b: 2 };\nfoo();', js), { text: 'b: 2', rule: 'bracket', final: true });
  // Nothing after the cursor closes the call: closing it is the suggestion's job and is kept.
  assert.deepEqual(postprocess('a, b)', at('print(|')), { text: 'a, b)', rule: undefined, final: false });
  // A closer of the wrong kind.
  assert.equal(postprocess('a]', at('print(|')).text, 'a');
});

test('brackets inside strings and comments do not count', () => {
  assert.deepEqual(scanBrackets('f("(", \')\') # (\nx = [1').open, ['[']);
  assert.deepEqual(bracketContext('s = """ ( """\nf(', ')\n'), { open: ['('], closedBySuffix: 1, state: { quote: undefined, comment: false } });
  assert.equal(postprocess('":)" + y)', at('print(|')).text, '":)" + y)');
});

test('brackets the suggestion opens are balanced: cut back to its last balanced line, or before the open one', () => {
  const ctx = at('def f():\n    |');
  assert.equal(postprocess('a = 1\n    b = g(2,\n', ctx).text, 'a = 1');
  assert.equal(postprocess('a = [1, 2', at('|')).text, 'a =');
  assert.equal(postprocess('a = (1]', at('|')).text, 'a =');
  assert.equal(postprocess('a = {"k": [1, 2]}\n', at('|')).text, 'a = {"k": [1, 2]}');
});

test('suggestions that only re-type what follows the cursor, whitespace aside, are dropped', () => {
  assert.equal(postprocess('return  x', at('def f(x):\n    |\n    return x\n')).dropped, 'repeats_suffix');
  assert.equal(postprocess('compute(a, b)', at('result = |\ncompute( a, b )\n')).dropped, 'repeats_suffix');
  assert.equal(postprocess('compute(a, c)', at('result = |\ncompute( a, b )\n')).text, 'compute(a, c)');
});

test('indentation is rewritten in the document\'s style', () => {
  assert.deepEqual(inferIndentStyle('a:\n  b\n  c:\n    d\n'), { tabs: false, spaces: 2 });
  assert.deepEqual(inferIndentStyle('a {\n\tb\n}\n'), { tabs: true });
  assert.equal(inferIndentStyle('a\nb\n'), undefined);
  // Tabs in the document, spaces from the model.
  const tabs = at('function f() {\n\tif (a) {\n\t\tb();\n\t}\n\t|\n\treturn 1;\n}\n');
  assert.equal(postprocess('if (b) {\n        c();\n    }', tabs).text, 'if (b) {\n\t\tc();\n\t}');
  // Four spaces in the document, tabs from the model.
  assert.equal(postprocess('if x:\n\t\ty = 2', at('def f():\n    x = 1\n    |')).text, 'if x:\n        y = 2');
  // Two spaces per level in the document, four from the model (measured from the cursor line).
  assert.equal(postprocess('if x:\n      y = 2\n  return y', at('def f():\n  x = 1\n  |')).text, 'if x:\n    y = 2');
  // Already in the document's style: unchanged.
  assert.equal(postprocess('if x:\n        y = 2', at('def f():\n    x = 1\n    |')).text, 'if x:\n        y = 2');
});

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('streaming: a final result on any prefix of a random output equals the result on the whole output', () => {
  const pieces = ['x = 1', 'foo(', ')', ']', '}', '[', '{', '\n', '\n    ', '\n        ', '\n\n', 'return y', '"', '# (', 'if a:', ' + ', 'total += i', '\n\t'];
  const contexts = [
    at('def f(x):\n    y = x + 1\n    |'),
    at('for i in range(10):\n    |\n    total += i\n'),
    at('print(|)\n'),
    at('function f(a) {|', ['\n\n\n']),
    at('  |'),
    at('call(a, |)\nnext()\n', ['END']),
    at('if (x) {\n\t|\n}\n'),
  ];
  const random = rng(42);
  for (let n = 0; n < 400; n++) {
    let out = '';
    const len = 3 + Math.floor(random() * 14);
    for (let i = 0; i < len; i++) out += pieces[Math.floor(random() * pieces.length)];
    // Sometimes a loop: the output repeated.
    if (random() < 0.3) out = out.repeat(3);
    for (const ctx of contexts) {
      const whole = postprocess(out, ctx);
      for (let k = 0; k <= out.length; k++) {
        const part = postprocess(out.slice(0, k), ctx);
        if (part.final) assert.equal(part.text, whole.text, `prefix ${k} of ${JSON.stringify(out)} in ${JSON.stringify(ctx.linePrefix)}`);
      }
    }
  }
});

test('the service stops the engine as soon as a repetition is decided, and shows the first copy', async () => {
  const three = 'a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    ';
  const model = new FakeModel({ msPerToken: 1, continuation: () => three.repeat(3) });
  const svc = new CompletionService(model, {
    maxTokens: 400, timeCapMs: 5000, debounceMs: 0, fimTemplate: 'auto', maxPrefixTokens: 1024, maxSuffixTokens: 256,
    stopSequences: [], contextFromOpenFiles: false, prefetch: false,
  });
  const doc = 'def fibonacci(n):\n    ';
  const out = await svc.complete({
    uri: 'file:///fib.py', languageId: 'python', text: doc, offset: doc.length, version: 1, invoked: true, currentVersion: () => 1,
  });
  assert.equal(out.kind === 'suggestion' && out.text, 'a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b');
  assert.equal(out.kind === 'suggestion' && out.timing.stop, 'postprocess');
  const generated = model.generations[0].result!.tokens.length;
  // One token per character: stopped right after the second copy's last line, not after the third copy.
  assert.ok(generated <= three.repeat(2).length - 4 + 2, `${generated} tokens generated`);
});
