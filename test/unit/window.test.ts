/** The document window prompt building reads (issue 15: a 20 MB document must cost what a small one does). */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as windowModule from '../../server/src/completion/window';
import { serverModule } from '../helpers';

const { documentWindow, WINDOW_CHUNK } = serverModule<typeof windowModule>('completion/window');

test('a small document is its own window', () => {
  const text = 'def f():\n    return 1\n';
  assert.deepEqual(documentWindow(text, 9, 1024, 256, 16), { text, offset: 9, start: 0 });
});

test('a 20 MB single line: the window is bounded by the budgets and keeps the text around the cursor', () => {
  const text = 'x = [' + '12345, '.repeat(3_000_000) + ']';
  const offset = text.length - 1;
  const w = documentWindow(text, offset, 1024, 256, 16);
  assert.ok(w.text.length <= (1024 + 256) * 16 + 3 * WINDOW_CHUNK, `window of ${w.text.length} chars`);
  assert.equal(w.text.slice(0, w.offset), text.slice(w.start, offset));
  assert.equal(w.text.slice(w.offset), text.slice(offset));
});

test('many lines: the window starts at a line start and stays put while the user types', () => {
  const lines = Array.from({ length: 100_000 }, (_, i) => `line_${i} = compute(${i})`);
  let text = lines.join('\n');
  // Well inside a chunk: 20 more characters do not cross a chunk boundary.
  const offset = 1024 * 16 + WINDOW_CHUNK + 100 * WINDOW_CHUNK + 100;
  const w1 = documentWindow(text, offset, 1024, 256, 16);
  assert.equal(text[w1.start - 1], '\n');
  // Type 20 characters at the cursor: same start, same text before the cursor plus what was typed.
  text = text.slice(0, offset) + 'abcdefghijklmnopqrst' + text.slice(offset);
  const w2 = documentWindow(text, offset + 20, 1024, 256, 16);
  assert.equal(w2.start, w1.start);
  assert.equal(w2.text.slice(0, w2.offset), w1.text.slice(0, w1.offset) + 'abcdefghijklmnopqrst');
});
