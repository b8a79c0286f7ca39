import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as cacheModule from '../../server/src/completion/cache';
import type * as debounceModule from '../../server/src/completion/debounce';
import { serverModule } from '../helpers';

const { CompletionCache } = serverModule<typeof cacheModule>('completion/cache');
const { AdaptiveDebounce } = serverModule<typeof debounceModule>('completion/debounce');

/** Key for a document with `|` at the cursor. */
function key(doc: string, uri = 'file:///a.py'): cacheModule.CacheKey {
  const offset = doc.indexOf('|');
  return { uri, offset, prefix: doc.slice(0, offset), suffix: doc.slice(offset + 1) };
}

test('exact hit for the same document state, miss for another document or suffix', () => {
  const cache = new CompletionCache();
  cache.put(key('def f(|)\n'), 'x, y');
  assert.deepEqual(cache.get(key('def f(|)\n')), { text: 'x, y', kind: 'exact', typed: 0, prefetched: false });
  assert.equal(cache.get(key('def f(|)\n', 'file:///b.py')), undefined);
  assert.equal(cache.get(key('def f(|)\nmore')), undefined);
  assert.equal(cache.get(key('def g(|)\n')), undefined);
  // Entries computed ahead (prefetch) say so on their hits.
  cache.put(key('def g(|)\n'), 'n', true);
  assert.equal(cache.get(key('def g(|)\n'))?.prefetched, true);
});

test('forward hits while the user types the start of the shown suggestion', () => {
  const cache = new CompletionCache();
  cache.put(key('x = |\n'), 'compute(a, b)');
  assert.deepEqual(cache.get(key('x = c|\n')), { text: 'ompute(a, b)', kind: 'forward', typed: 1, prefetched: false });
  assert.deepEqual(cache.get(key('x = compute(|\n')), { text: 'a, b)', kind: 'forward', typed: 8, prefetched: false });
  // A character that differs from the suggestion: miss.
  assert.equal(cache.get(key('x = cx|\n')), undefined);
  // Typed the whole suggestion: nothing left to show.
  assert.equal(cache.get(key('x = compute(a, b)|\n')), undefined);
  // Works with prefixes longer than the window, too.
  const long = 'y'.repeat(CompletionCache.PREFIX_WINDOW + 50) + '\nz = ';
  cache.put(key(long + '|'), 'value + 1');
  assert.deepEqual(cache.get(key(long + 'val|')), { text: 'ue + 1', kind: 'forward', typed: 3, prefetched: false });
});

test('least recently used entries are evicted at capacity; entries expire after the TTL', () => {
  let now = 0;
  const cache = new CompletionCache(2, 1000, () => now);
  cache.put(key('a|'), 'A');
  cache.put(key('b|'), 'B');
  assert.ok(cache.get(key('a|'))); // a is now the most recent
  cache.put(key('c|'), 'C');
  assert.equal(cache.size, 2);
  assert.equal(cache.get(key('b|')), undefined);
  assert.ok(cache.get(key('a|')));
  now = 2000;
  assert.equal(cache.get(key('a|')), undefined);
  assert.equal(cache.get(key('c|')), undefined);
  cache.put(key('d|'), '');
  assert.equal(cache.get(key('d|')), undefined, 'empty suggestions are not stored');
});

test('adaptive debounce: base after a pause, stretched during a typing burst, base again for slow typing', () => {
  const d = new AdaptiveDebounce(75);
  assert.equal(d.next(0), 75, 'first request: base');
  // Typing every 120 ms: the wait grows to ~1.5 × the average interval.
  let t = 0;
  let last = 0;
  for (let i = 0; i < 20; i++) last = d.next((t += 120));
  assert.equal(last, 180);
  // Very fast typing never waits less than the base.
  const fast = new AdaptiveDebounce(200);
  for (let i = 0, tt = 0; i < 20; i++) last = fast.next((tt += 30));
  assert.equal(last, 200);
  // Slow, steady typing (every 400 ms) is not a burst: an answer would be seen, ask at once.
  const slow = new AdaptiveDebounce(75);
  for (let i = 0, tt = 0; i < 20; i++) last = slow.next((tt += 400));
  assert.equal(last, 75);
  // After a burst, a pause (reading, Tab) pulls the average up: back to the base within a request or two.
  t += 3000;
  last = d.next(t);
  last = d.next((t += 500));
  assert.equal(last, 75);
});
