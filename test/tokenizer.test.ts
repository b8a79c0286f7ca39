// The tokenizer against what the Rust `tokenizers` library and transformers produce (reference.json).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as vocabularyModule from '../server/src/completion/vocabulary';
import type * as tokenizerModule from '../server/src/tokenizer';
import type * as tokenizerThreadModule from '../server/src/tokenizerThread';
import { loadReference, needsFixtures, qwenModelDir, serverModule, tinyModelDir } from './helpers';

const { MixqTokenizer, TokenizerError } = serverModule<typeof tokenizerModule>('tokenizer');

const tok = MixqTokenizer.load(tinyModelDir);

test('special ids come from tokenizer_config.json and added_tokens', () => {
  assert.equal(tok.unkId, 0);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  assert.deepEqual(tok.fim, { prefix: 3, middle: 4, suffix: 5, modes: ['psm', 'spm'] });
  assert.equal(tok.vocabSize, 8192);
  assert.ok(tok.isSpecial(1) && tok.isSpecial(5) && !tok.isSpecial(6));
  assert.ok(!tok.isByteFallback(5) && tok.isByteFallback(6) && tok.isByteFallback(261) && !tok.isByteFallback(262));
  assert.equal(tok.tokenText(6), '<0x00>');
});

test('plain prompts get BOS; pieces without special tokens do not', () => {
  const withBos = tok.encode('def f():');
  const raw = tok.encode('def f():', { addSpecialTokens: false });
  assert.equal(withBos[0], tok.bosId);
  assert.deepEqual(withBos.slice(1), raw);
  assert.deepEqual(tok.encode('', { addSpecialTokens: false }), []);
  assert.equal(tok.decode([]), '');
});

test('decode does not clean up tokenization spaces', () => {
  const text = 'from . import x, y ; a . b';
  assert.equal(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);
});

test('decode rejects ids outside the vocabulary', () => {
  assert.throws(() => tok.decode([1, 8192]), /outside the vocabulary/);
  assert.throws(() => tok.decode([-1]), /outside the vocabulary/);
});

test('an invalid UTF-8 run of byte tokens decodes to one U+FFFD per byte (as Rust tokenizers)', () => {
  // 0xE6 0x97 0xA5 is "日"; 0xE6 alone is an incomplete sequence; 0xC3 0xA9 is "é".
  const b = (byte: number): number => 6 + byte;
  assert.equal(tok.decode([b(0xe6), b(0x97), b(0xa5)]), '日');
  assert.equal(tok.decode([b(0xc3), b(0xa9), b(0xe6)]), '\uFFFD\uFFFD\uFFFD');
  const a = tok.encode('a', { addSpecialTokens: false });
  assert.equal(tok.decode([b(0xe6), ...a, b(0xc3), b(0xa9)]), '\uFFFDaé');
});

test('missing or broken tokenizer files give errors naming the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-tok-'));
  try {
    assert.throws(() => MixqTokenizer.load(dir), (e: Error) => e instanceof TokenizerError && e.message.includes('tokenizer.json'));
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    assert.throws(() => MixqTokenizer.load(dir), /tokenizer\.json: invalid JSON/);
    fs.copyFileSync(path.join(tinyModelDir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<bos>' }));
    assert.throws(() => MixqTokenizer.load(dir), /tokenizer_config\.json: "bos_token" names "<bos>"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('every reference tokenizer case: identical ids and decode(encode(text)) == text', { skip: needsFixtures }, () => {
  const ref = loadReference();
  assert.ok(ref.tokenizer_cases.length > 0);
  for (const c of ref.tokenizer_cases) {
    const ids = tok.encode(c.text, { addSpecialTokens: false });
    assert.deepEqual(ids, c.ids, `ids of ${JSON.stringify(c.text.slice(0, 40))}`);
    assert.equal(tok.decode(ids), c.text);
  }
});

test('reference prompts: input_ids (plain with BOS, FIM layouts) and greedy_text', { skip: needsFixtures }, () => {
  const ref = loadReference();
  for (const p of ref.prompts) {
    if (p.suffix === null) {
      assert.deepEqual(tok.encode(p.text), p.input_ids, p.name);
    } else {
      const mode = p.name.endsWith('spm') ? 'spm' : 'psm';
      assert.deepEqual(tok.fimPrompt(p.text, p.suffix, mode), p.input_ids, p.name);
    }
    assert.equal(tok.decode(p.greedy_32), p.greedy_text, `greedy_text of ${p.name}`);
  }
});

test('parseSpecialTokens: false keeps special-token strings in user code as text', () => {
  const html = 'a <s>strike</s> b <unk>';
  const parsed = tok.encode(html, { addSpecialTokens: false });
  assert.ok(parsed.includes(tok.bosId!) && parsed.includes(tok.eosId), 'default: matched as special tokens, as transformers does');
  const literal = tok.encode(html, { addSpecialTokens: false, parseSpecialTokens: false });
  assert.ok(literal.every((id) => !tok.isSpecial(id)), `${literal}`);
  assert.equal(tok.decode(literal), html);
  // Text without such strings encodes the same either way, and BOS is still added by the template.
  const code = 'def f(x):\n    return x';
  assert.deepEqual(tok.encode(code, { parseSpecialTokens: false }), tok.encode(code));
  // FIM pieces are always literal: the markers appear once each, where the layout puts them.
  const fim = tok.fimPrompt('x = "</s>"', '<fim_middle>', 'psm');
  assert.deepEqual(fim.filter((id) => tok.isSpecial(id)), [tok.fim!.prefix, tok.fim!.suffix, tok.fim!.middle]);
});

// ---- the Qwen3-MoE fixture: byte-level BPE (GPT-2 byte alphabet), no BOS, EOS <|endoftext|>, Qwen FIM tokens ----
const qwen = MixqTokenizer.load(qwenModelDir);

test('qwen: no BOS or unk, EOS <|endoftext|>, FIM ids found from the special tokens (psm)', () => {
  assert.equal(qwen.bosId, undefined);
  assert.equal(qwen.unkId, undefined);
  assert.equal(qwen.eosId, 8192);
  assert.equal(qwen.tokenText(8192), '<|endoftext|>');
  assert.deepEqual(qwen.fim, { prefix: 8195, middle: 8196, suffix: 8197, modes: ['psm'] });
  assert.equal(qwen.vocabSize, 8201);
  assert.ok(qwen.isSpecial(8200) && !qwen.isSpecial(8191));
  for (let id = 0; id < qwen.vocabSize; id++) assert.ok(!qwen.isByteFallback(id), 'byte-level BPE has no <0xNN> tokens');
  // Plain prompts get no BOS: the post-processor adds nothing.
  assert.deepEqual(qwen.encode('def f():'), qwen.encode('def f():', { addSpecialTokens: false }));
  // An explicit bos_token naming a missing token is still an error.
  assert.throws(() => new MixqTokenizer(JSON.parse(fs.readFileSync(path.join(qwenModelDir, 'tokenizer.json'), 'utf8')), { bos_token: '<s>' }),
    /"bos_token" names "<s>"/);
});

test('qwen: every reference tokenizer case gives identical ids and decode(encode(text)) == text', { skip: needsFixtures }, () => {
  const ref = loadReference('mixq-tiny-qwen3moe');
  assert.ok(ref.tokenizer_cases.some((c) => c.text.includes('<|fim_prefix|>')) && ref.tokenizer_cases.some((c) => c.text.includes('🙂')));
  for (const c of ref.tokenizer_cases) {
    const ids = qwen.encode(c.text, { addSpecialTokens: false });
    assert.deepEqual(ids, c.ids, `ids of ${JSON.stringify(c.text.slice(0, 40))}`);
    assert.equal(qwen.decode(ids), c.text);
  }
});

test('qwen: reference prompts (plain without BOS, FIM psm) and greedy_text', { skip: needsFixtures }, () => {
  const ref = loadReference('mixq-tiny-qwen3moe');
  for (const p of ref.prompts) {
    const ids = p.suffix === null ? qwen.encode(p.text) : qwen.fimPrompt(p.text, p.suffix, 'psm');
    assert.deepEqual(ids, p.input_ids, p.name);
    assert.equal(qwen.decode(p.greedy_32), p.greedy_text, `greedy_text of ${p.name}`);
  }
});

test('the tokenizer on its thread (ThreadTokenizer) answers exactly as MixqTokenizer, errors included', async () => {
  const { ThreadTokenizer } = serverModule<typeof tokenizerThreadModule>('tokenizerThread');
  const { vocabularyFacts } = serverModule<typeof vocabularyModule>('completion/vocabulary');
  const remote = await ThreadTokenizer.load(tinyModelDir);
  try {
    assert.deepEqual([remote.bosId, remote.eosId, remote.unkId, remote.vocabSize, remote.fim], [tok.bosId, tok.eosId, tok.unkId, tok.vocabSize, tok.fim]);
    for (let id = 0; id < tok.vocabSize; id++) {
      assert.equal(remote.isByteFallback(id), tok.isByteFallback(id), `isByteFallback(${id})`);
      assert.equal(remote.isSpecial(id), tok.isSpecial(id), `isSpecial(${id})`);
    }
    assert.deepEqual(remote.facts, vocabularyFacts(tok));
    const texts = ['def f(x):\n    return x', 'a <s>strike</s> b <unk>', 'naïve 日本語 😀\t\n', ''];
    for (const text of texts) {
      for (const options of [{}, { addSpecialTokens: false }, { addSpecialTokens: false, parseSpecialTokens: false }]) {
        const ids = tok.encode(text, options);
        assert.deepEqual(remote.encode(text, options), ids, `${JSON.stringify(text)} ${JSON.stringify(options)}`);
        assert.equal(remote.decode(ids, { skipSpecialTokens: true }), tok.decode(ids, { skipSpecialTokens: true }));
      }
      assert.deepEqual(remote.fimPrompt(text, 'x = 1\n', 'psm'), tok.fimPrompt(text, 'x = 1\n', 'psm'));
    }
    assert.equal(remote.decode([0xc3 + 3, 0xa9 + 3]), tok.decode([0xc3 + 3, 0xa9 + 3]));
    assert.equal(remote.tokenText(6), '<0x00>');
    assert.throws(() => remote.decode([9000]), (e: Error) => e instanceof TokenizerError && /token id 9000 is outside the vocabulary/.test(e.message));
  } finally {
    await remote.dispose();
  }
  assert.throws(() => remote.encode('x'), /the tokenizer was disposed/);
  // Load errors come back from the thread with the file named.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-tok-'));
  try {
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    await assert.rejects(ThreadTokenizer.load(dir), (e: Error) => e instanceof TokenizerError && e.message.includes(path.join(dir, 'tokenizer.json: invalid JSON')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
