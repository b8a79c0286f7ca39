// Incremental detokenization: streamed chunks concatenate to the full decode and never split a character.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as detokenizerModule from '../server/src/detokenizer';
import type * as tokenizerModule from '../server/src/tokenizer';
import { loadReference, needsFixtures, qwenModelDir, serverModule, tinyModelDir } from './helpers';

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

test('streaming decodes O(n) ids in all (each push decodes a window, not the whole stream)', { skip: needsFixtures }, () => {
  // Every reference continuation and prompt text, one after another: a long stream with byte-fallback runs.
  const ref = loadReference();
  const ids = ref.prompts.flatMap((p) => [...p.greedy_32, ...tok.encode(p.text, { addSpecialTokens: false })]);
  let decodedIds = 0;
  let calls = 0;
  const counting: detokenizerModule.Detokenizable = {
    decode: (window, options) => {
      calls++;
      decodedIds += window.length;
      return tok.decode(window, options);
    },
    isByteFallback: (id) => tok.isByteFallback(id),
  };
  for (const skipSpecialTokens of [false, true]) {
    decodedIds = 0;
    calls = 0;
    const detok = new IncrementalDetokenizer(counting, { skipSpecialTokens });
    let streamed = '';
    for (const id of ids) streamed += detok.push(id);
    streamed += detok.flush();
    assert.equal(streamed, tok.decode(ids, { skipSpecialTokens }), 'the streamed text equals the full decode');
    // Re-decoding the stream at every token would be n(n+1)/2 ids.
    assert.ok(ids.length > 300, `${ids.length} ids`);
    assert.ok(decodedIds <= 6 * ids.length, `${decodedIds} ids decoded for ${ids.length} pushed`);
    assert.ok(calls <= 2 * ids.length + 2, `${calls} decode calls for ${ids.length} pushed`);
  }
});

// ---- byte-level BPE (the Qwen3-MoE fixture): tokens carry raw UTF-8 bytes, so one character can span tokens ----
const qwen = MixqTokenizer.load(qwenModelDir);

function qwenStream(ids: number[], skipSpecialTokens = false): string[] {
  const detok = new IncrementalDetokenizer(qwen, { skipSpecialTokens });
  const chunks = ids.map((id) => detok.push(id));
  chunks.push(detok.flush());
  assert.equal(detok.text, chunks.join(''));
  return chunks;
}

test('byte-level: a character whose bytes span tokens is never emitted in halves', () => {
  const text = 'emoji 🙂 and 日本語 and \r\n CRLF\ttab — naïve 𝔘𝔫𝔦';
  const ids = qwen.encode(text, { addSpecialTokens: false });
  // The case must exercise the point: some token alone is an incomplete UTF-8 sequence.
  assert.ok(ids.some((id) => qwen.decode([id]).includes('\uFFFD')), 'no token splits a character in this text');
  const chunks = qwenStream(ids);
  assert.equal(chunks.join(''), text);
  for (const c of chunks) {
    assert.ok(!c.includes('\uFFFD'), `chunk ${JSON.stringify(c)} holds a partial character`);
    assert.ok(!/[\uD800-\uDBFF]$/.test(c) && !/^[\uDC00-\uDFFF]/.test(c), `chunk ${JSON.stringify(c)} splits a surrogate pair`);
  }
  // Each character arrives as soon as its last byte does: text streams before the flush.
  assert.ok(chunks.slice(0, -1).join('').length >= text.length - 4);
});

test('byte-level: every token of the vocabulary after a split character streams to the full decode', () => {
  const ids = qwen.encode('日本', { addSpecialTokens: false });
  const first = ids.find((id) => qwen.decode([id]).includes('\uFFFD'));
  assert.ok(first !== undefined);
  for (let id = 0; id < qwen.vocabSize; id += 7) {
    const seq: number[] = [first, id];
    assert.equal(qwenStream(seq).join(''), qwen.decode(seq), `ids ${seq}`);
  }
});

test('byte-level: reference greedy_32 streams to the full decode, <|endoftext|> dropped when asked', { skip: needsFixtures }, () => {
  for (const p of loadReference('mixq-tiny-qwen3moe').prompts) {
    for (const skip of [false, true]) {
      const full = qwen.decode(p.greedy_32, { skipSpecialTokens: skip });
      const chunks = qwenStream(p.greedy_32, skip);
      assert.equal(chunks.join(''), full, p.name);
      if (!full.includes('\uFFFD')) for (const c of chunks) assert.ok(!c.includes('\uFFFD'), `${p.name}: ${JSON.stringify(c)}`);
      if (skip) assert.ok(!chunks.join('').includes('<|endoftext|>'));
    }
  }
});
