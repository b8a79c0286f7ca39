import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as postprocessModule from '../../server/src/completion/postprocess';
import { serverModule } from '../helpers';

const { postprocess, postprocessContext } = serverModule<typeof postprocessModule>('completion/postprocess');

/** Context from a document with `|` marking the cursor. */
function at(doc: string, stops: string[] = []): postprocessModule.PostprocessContext {
  const offset = doc.indexOf('|');
  return postprocessContext(doc.replace('|', ''), offset, stops);
}

test('context split at the cursor', () => {
  const ctx = at('a = 1\nb = f(|x)\nc = 3\n');
  assert.deepEqual([ctx.linePrefix, ctx.lineSuffix, ctx.followingText], ['b = f(', 'x)', 'c = 3\n']);
  const end = at('abc|');
  assert.deepEqual([end.linePrefix, end.lineSuffix, end.followingText], ['abc', '', '']);
});

test('stop sequences cut at the earliest one; final only once no longer match can start earlier', () => {
  const ctx = at('x = |\n', ['\n\n', 'END']);
  assert.deepEqual(postprocess('1 + 2END and more', ctx), { text: '1 + 2', rule: 'stop_sequence', final: true });
  assert.equal(postprocess('foo\n\nbar', ctx).text, 'foo');
  // "END" found at the very end: a longer stop could not start before it, final; ("\n\n" is 2 long, END 3)
  const nearEnd = postprocess('abEN', at('x = |', ['EN', 'xxxxx']));
  assert.equal(nearEnd.text, 'ab');
  assert.equal(nearEnd.final, false, 'a 5-char stop could still start before position 2');
});

test('one line only when non-space text sits right of the cursor, without repeating that text', () => {
  const ctx = at('print(|)\n');
  const r = postprocess('"hello")\nprint("world")', ctx);
  assert.deepEqual(r, { text: '"hello"', rule: 'single_line', final: true });
  // Only whitespace right of the cursor: multi-line allowed.
  assert.equal(postprocess('a\nb', at('x = |   \n')).text, 'a\nb');
  // Nothing but the text already right of the cursor: dropped.
  assert.equal(postprocess(')', ctx).dropped, 'empty');
});

test('stops at the end of the current block by indentation', () => {
  const ctx = at('def f(x):\n    y = x + 1\n    |');
  // Lines at the block's indentation continue; a dedented line ends the block.
  const r = postprocess('z = y * 2\n    return z\n\ndef g():\n    pass', ctx);
  assert.deepEqual(r, { text: 'z = y * 2\n    return z', rule: 'block_end', final: true });
  // Before a non-space char arrives on the next line its indentation is unknown: not final.
  const partial = postprocess('z = y * 2\n    return z\n\n', ctx);
  assert.equal(partial.final, false);
  assert.equal(partial.text, 'z = y * 2\n    return z');
});

test('a line that opens a block: the body continues, back at its indentation ends it, a closing bracket is kept', () => {
  const py = at('class A:\n    def f(self):|');
  assert.deepEqual(postprocess('\n        return 1\n    def g(self):\n        pass', py), { text: '\n        return 1', rule: 'block_end', final: true });
  const js = at('function f(a) {|');
  const r = postprocess('\n  return a + 1;\n}\n\nfunction g() {}', js);
  assert.deepEqual(r, { text: '\n  return a + 1;\n}', rule: 'block_end', final: true });
  // The closing line is not complete yet: keep streaming.
  assert.equal(postprocess('\n  return a + 1;\n}', js).final, false);
});

test('a cursor on a blank line takes the typed indentation as the block', () => {
  const ctx = at('if ok:\n    a()\n    |\nrest()\n');
  assert.deepEqual(postprocess('b()\nrest()', ctx), { text: 'b()', rule: 'block_end', final: true });
});

test('suggestions repeating the suffix: cut at the repeated line, dropped when nothing new remains', () => {
  const ctx = at('for i in range(10):\n    |\n    total += i\n');
  const r = postprocess('x = i * 2\n    total += i\nprint(total)', ctx);
  assert.deepEqual(r, { text: 'x = i * 2', rule: 'suffix_repeat', final: true });
  // An incomplete line equal to the next suffix line is cut, but could still grow: not final.
  const growing = postprocess('x = i * 2\n    total += i', ctx);
  assert.deepEqual([growing.text, growing.final], ['x = i * 2', false]);
  // The whole suggestion is what follows the cursor already.
  assert.deepEqual(postprocess('total += i', ctx), { text: '', rule: undefined, final: false, dropped: 'repeats_suffix' });
  // Mid-line at the end of a line, the model re-writes the next line: nothing left.
  assert.equal(postprocess('\n    total += i\n', at('x = 1|\n    total += i\n')).dropped, 'empty');
});

test('trailing whitespace is trimmed and whitespace-only suggestions are dropped', () => {
  const ctx = at('x = |');
  assert.equal(postprocess('42   \n\n', ctx).text, '42');
  assert.deepEqual(postprocess('  \n \n', ctx), { text: '', rule: undefined, final: false, dropped: 'empty' });
});

test('a final result on a prefix of the output equals the result on the whole output', () => {
  const outputs = [
    'z = y * 2\n    return z\n\ndef g():\n    pass\n',
    'x = i * 2\n    total += i\nprint(total)\n',
    '"hello")\nprint("world")\n',
    '\n  return a + 1;\n}\n\nfunction g() {}\n',
    'a\n  b\n    c\n  d\ne\n',
  ];
  const contexts = [
    at('def f(x):\n    y = x + 1\n    |'),
    at('for i in range(10):\n    |\n    total += i\n'),
    at('print(|)\n'),
    at('function f(a) {|', ['\n\n\n']),
    at('  |'),
  ];
  for (const out of outputs) {
    for (const ctx of contexts) {
      const whole = postprocess(out, ctx);
      for (let n = 0; n <= out.length; n++) {
        const part = postprocess(out.slice(0, n), ctx);
        if (part.final) assert.equal(part.text, whole.text, `prefix ${n} of ${JSON.stringify(out)}`);
      }
    }
  }
});
