// Incremental detokenization: streamed chunks concatenate to the full decode and never split a character.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as detokenizerModule from '../server/src/detokenizer';
import type * as tokenizerModule from '../server/src/tokenizer';
import { loadReference, needsFixtures, serverModule, tinyModelDir } from './helpers';

const { IncrementalDetokenizer } = serverModule<typeof detokenizerModule>('detokenizer');
const { MixqTokenizer } = serverModule<typeof tokenizerModule>('tokenizer');

const tok = MixqTokenizer.load(tinyModelDir);
const byteToken = (byte: number): number => 6 + byte; // <0x00> is id 6 in this vocabulary

function stream(ids: number[], skipSpecialTokens = false): string[] {
  const detok = new IncrementalDetokenizer(tok, { skipSpecialTokens });
  const chunks = ids.map((id) => detok.push(id));
  chunks.push(detok.flush());
  assert.equal(detok.text, chunks.join(''));
  return chunks;
}

test('a multi-byte character split over byte tokens is emitted whole, once complete', () => {
  const a = tok.encode('a', { addSpecialTokens: false });
  // "日" = E6 97 A5, followed by a normal token that closes the byte run.
  const ids = [...a, byteToken(0xe6), byteToken(0x97), byteToken(0xa5), ...a];
  const chunks = stream(ids);
  assert.deepEqual(chunks, ['a', '', '', '', '日a', '']);
});

test('a trailing incomplete sequence is held back until flush', () => {
  const detok = new IncrementalDetokenizer(tok);
  assert.equal(detok.push(tok.encode('x', { addSpecialTokens: false })[0]), 'x');
  assert.equal(detok.push(byteToken(0xe6)), '');
  assert.equal(detok.push(byteToken(0x97)), '');
  assert.equal(detok.flush(), '\uFFFD\uFFFD');
  assert.equal(detok.text, tok.decode(detok.tokens as number[]));
});

test('special tokens are dropped when asked, kept otherwise', () => {
  const ids = [...tok.encode('return x', { addSpecialTokens: false }), tok.eosId];
  assert.equal(stream(ids, true).join(''), 'return x');
  assert.equal(stream(ids, false).join(''), 'return x</s>');
});

test('reference greedy_32 of every prompt streams to the full decode', { skip: needsFixtures }, () => {
  const ref = loadReference();
  let sawByteTokens = false;
  for (const p of ref.prompts) {
    for (const skip of [false, true]) {
      const full = tok.decode(p.greedy_32, { skipSpecialTokens: skip });
      const chunks = stream(p.greedy_32, skip);
      assert.equal(chunks.join(''), full, p.name);
      if (!full.includes('\uFFFD')) {
        for (const c of chunks) assert.ok(!c.includes('\uFFFD'), `${p.name}: chunk ${JSON.stringify(c)} has U+FFFD`);
      }
      // Chunks arrive as tokens do: not everything at flush.
      if (p.greedy_32.some((id) => !tok.isByteFallback(id))) {
        assert.ok(chunks.slice(0, -1).join('').length > 0, `${p.name}: nothing streamed before flush`);
      }
    }
    sawByteTokens ||= p.greedy_32.some((id) => tok.isByteFallback(id));
    // Every prefix of the stream is also consistent (as if generation had stopped there).
    for (let n = 1; n <= p.greedy_32.length; n++) {
      assert.equal(stream(p.greedy_32.slice(0, n)).join(''), tok.decode(p.greedy_32.slice(0, n)), `${p.name}[:${n}]`);
    }
  }
  assert.ok(sawByteTokens, 'the unicode prompt should exercise byte-fallback tokens');
});

test('reference prompt texts stream whole characters (including the unicode prompt)', { skip: needsFixtures }, () => {
  const ref = loadReference();
  for (const p of ref.prompts) {
    const ids = tok.encode(p.text, { addSpecialTokens: false });
    const chunks = stream(ids);
    assert.equal(chunks.join(''), p.text);
    for (const c of chunks) assert.ok(!c.includes('\uFFFD'), `${p.name}: ${JSON.stringify(c)}`);
  }
});
