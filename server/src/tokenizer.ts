/**
 * The model's tokenizer, read from a Hugging Face model folder (tokenizer.json + tokenizer_config.json).
 *
 * Exported API (used by the language server, the CLI and the tests):
 *
 *   const tok = MixqTokenizer.load(modelDir);
 *   tok.encode(text)                                → number[]  post-processor rules apply (BOS first for this model)
 *   tok.encode(text, { addSpecialTokens: false })   → number[]  raw pieces (FIM parts, continuations)
 *   tok.encode(code, { parseSpecialTokens: false }) → number[]  "</s>" in user text stays text, never EOS
 *   tok.decode(ids, { skipSpecialTokens })          → string    no "clean up tokenization spaces"
 *   tok.fimPrompt(prefix, suffix, 'psm' | 'spm')    → number[]  FIM layouts of the fixtures README (no BOS;
 *                                                               special-token strings in the code stay text)
 *   tok.bosId / eosId / unkId / fim / vocabSize     special ids from tokenizer_config.json + added_tokens (bosId and
 *                                                   unkId undefined for models without, e.g. Qwen: bos_token null)
 *   tok.isByteFallback(id)                          true for the `<0xNN>` byte tokens
 *   tok.isSpecial(id)                               true for added tokens marked special
 *
 * FIM tokens: tokenizer_config.json's `fim` (prefix/middle/suffix/modes), else Qwen's special tokens
 * `<|fim_prefix|>` `<|fim_middle|>` `<|fim_suffix|>` when the vocabulary has them (layout psm).
 *
 * Decoding matches the Rust `tokenizers` library (what transformers uses) exactly, including one detail
 * where the JS port differs: a run of byte-fallback tokens that is not valid UTF-8 as a whole decodes to
 * one U+FFFD per byte (Rust), not to the valid pieces plus replacement characters (WHATWG TextDecoder).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { MAX_JSON_FILE_BYTES, MAX_TOKENIZER_FILE_BYTES, readRegularFileSync } from './files';

import type * as HfTokenizers from '@huggingface/tokenizers' with { 'resolution-mode': 'import' };

// The package ships a CommonJS build for `require`; its types are declared as ESM, hence the type-only import.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const hf = require('@huggingface/tokenizers') as typeof HfTokenizers;

export type FimMode = 'psm' | 'spm';

export interface FimTokens {
  prefix: number;
  middle: number;
  suffix: number;
  modes: FimMode[];
}

export interface EncodeOptions {
  /** Apply the post-processor template (for this model: BOS first). Default true. */
  addSpecialTokens?: boolean;
  /**
   * Match special-token strings written in the text ("<s>", "</s>", "<fim_prefix>") as those tokens. Default
   * true, as transformers does. Pass false for user code: an HTML `<s>…</s>` must not become BOS/EOS
   * (the text is then tokenized as if the special tokens were not in the vocabulary).
   */
  parseSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop added tokens marked special (`<s>`, `</s>`, FIM markers). Default false. */
  skipSpecialTokens?: boolean;
}

/** A token of the model's vocabulary written `<0xNN>`: byte fallback for characters without a piece. */
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

export class TokenizerError extends Error {}

/** True when anything (a FIFO too: reading it is refused with a message, not skipped) exists at `file`. */
function exists(file: string): boolean {
  try {
    fs.statSync(file);
    return true;
  } catch {
    return false;
  }
}

function readText(file: string, maxBytes: number): string {
  try {
    return readRegularFileSync(file, maxBytes, 'a tokenizer file');
  } catch (e) {
    throw new TokenizerError((e as Error).message);
  }
}

function parseJsonObject(file: string, text: string): Record<string, unknown> {
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new Error('not a JSON object');
    }
    return value as Record<string, unknown>;
  } catch (e) {
    throw new TokenizerError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

/** A special-token entry of tokenizer_config.json: either "<s>" or {"content": "<s>", ...}. */
function tokenName(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

interface DecoderNode {
  decoders?: DecoderNode[];
  decode_chain(tokens: string[]): string[];
}

/**
 * Rust `tokenizers` ByteFallback: consecutive `<0xNN>` tokens are joined; if the bytes are valid UTF-8 they
 * become that text, else every byte becomes U+FFFD.
 */
function strictByteFallbackChain(tokens: string[]): string[] {
  const strict = new TextDecoder('utf-8', { fatal: true });
  const out: string[] = [];
  let bytes: number[] = [];
  const flush = (): void => {
    if (bytes.length === 0) return;
    try {
      out.push(strict.decode(Uint8Array.from(bytes)));
    } catch {
      for (let i = 0; i < bytes.length; i++) out.push('\uFFFD');
    }
    bytes = [];
  };
  for (const token of tokens) {
    const m = BYTE_TOKEN.exec(token);
    if (m) {
      bytes.push(parseInt(m[1], 16));
    } else {
      flush();
      out.push(token);
    }
  }
  flush();
  return out;
}

// Exported by the package at run time, though its type declarations leave it out.
const ByteFallbackDecoder = (hf as unknown as { ByteFallbackDecoder: abstract new (...args: never[]) => unknown })
  .ByteFallbackDecoder;

function patchByteFallback(node: DecoderNode | null | undefined): void {
  if (!node) return;
  if (node instanceof ByteFallbackDecoder) {
    node.decode_chain = strictByteFallbackChain;
  }
  for (const child of node.decoders ?? []) patchByteFallback(child);
}

/** Qwen's FIM special tokens (Qwen2.5-Coder, Qwen3-Coder): detected when tokenizer_config.json has no `fim`. */
const QWEN_FIM = { prefix: '<|fim_prefix|>', middle: '<|fim_middle|>', suffix: '<|fim_suffix|>' } as const;

/**
 * What the engine, the completion pipeline and the CLI use of a tokenizer: a MixqTokenizer, or the language server's
 * view of one that lives on a worker thread (./tokenizerThread).
 */
export interface Tokenizer {
  readonly bosId: number | undefined;
  readonly eosId: number;
  readonly unkId: number | undefined;
  readonly fim: FimTokens | undefined;
  readonly vocabSize: number;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: DecodeOptions): string;
  fimPrompt(prefix: string, suffix: string, mode?: FimMode): number[];
  isByteFallback(id: number): boolean;
  isSpecial(id: number): boolean;
  tokenText(id: number): string | undefined;
}

export class MixqTokenizer implements Tokenizer {
  /** BOS id; undefined when tokenizer_config.json sets bos_token null (or leaves it out and there is no `<s>`). */
  readonly bosId: number | undefined;
  readonly eosId: number;
  readonly unkId: number | undefined;
  /** FIM special ids when tokenizer_config.json names them (`fim.prefix/middle/suffix`), else undefined. */
  readonly fim: FimTokens | undefined;
  /** Size of the vocabulary including added tokens (max id + 1). */
  readonly vocabSize: number;

  private readonly hfTokenizer: HfTokenizers.Tokenizer;
  /** Same tokenizer without added special tokens, for parseSpecialTokens: false (built on first use). */
  private literalTokenizer: HfTokenizers.Tokenizer | undefined;
  private readonly tokenizerJson: Record<string, unknown>;
  private readonly tokenizerConfig: Record<string, unknown>;
  private readonly byteTokenIds: Uint8Array; // 1 where id is a `<0xNN>` token
  private readonly specialIds: Set<number>;
  private readonly tokenizerJsonPath: string;

  /**
   * Reads DIR/tokenizer.json and DIR/tokenizer_config.json (regular files within a size cap: a FIFO or /dev/zero is
   * refused, see ./files). Throws TokenizerError naming the file/field.
   */
  static load(modelDir: string): MixqTokenizer {
    const jsonPath = path.join(modelDir, 'tokenizer.json');
    const configPath = path.join(modelDir, 'tokenizer_config.json');
    const tokenizerJson = parseJsonObject(jsonPath, readText(jsonPath, MAX_TOKENIZER_FILE_BYTES));
    const tokenizerConfig = exists(configPath) ? parseJsonObject(configPath, readText(configPath, MAX_JSON_FILE_BYTES)) : {};
    return new MixqTokenizer(tokenizerJson, tokenizerConfig, jsonPath, configPath);
  }

  constructor(
    tokenizerJson: Record<string, unknown>,
    tokenizerConfig: Record<string, unknown>,
    jsonPath = 'tokenizer.json',
    configPath = 'tokenizer_config.json',
  ) {
    this.tokenizerJsonPath = jsonPath;
    this.tokenizerJson = tokenizerJson;
    this.tokenizerConfig = tokenizerConfig;
    const model = tokenizerJson.model as { vocab?: unknown } | undefined;
    if (!model || typeof model !== 'object' || !model.vocab || typeof model.vocab !== 'object') {
      throw new TokenizerError(`${jsonPath}: missing field "model.vocab"`);
    }
    try {
      this.hfTokenizer = new hf.Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new TokenizerError(`${jsonPath}: unsupported tokenizer (${(e as Error).message})`);
    }
    patchByteFallback(this.hfTokenizer.decoder as unknown as DecoderNode | null);

    const vocab = this.hfTokenizer.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.byteTokenIds = new Uint8Array(this.vocabSize);
    for (const [token, id] of vocab) {
      if (BYTE_TOKEN.test(token)) this.byteTokenIds[id] = 1;
    }
    this.specialIds = new Set();
    for (const [id, added] of this.hfTokenizer.get_added_tokens_decoder()) {
      if (added.special) this.specialIds.add(id);
    }

    const idOf = (field: string, fallback: string): number => {
      const name = tokenName(tokenizerConfig[field]) ?? fallback;
      const id = this.hfTokenizer.token_to_id(name);
      if (id === undefined) {
        throw new TokenizerError(`${configPath}: "${field}" names "${name}", which is not in ${jsonPath}`);
      }
      return id;
    };
    // An optional token: none when the field is null, or absent while the vocabulary lacks the usual name.
    const optionalIdOf = (field: string, fallback: string): number | undefined => {
      if (tokenizerConfig[field] === null) return undefined;
      if (tokenizerConfig[field] === undefined && this.hfTokenizer.token_to_id(fallback) === undefined) return undefined;
      return idOf(field, fallback);
    };
    this.bosId = optionalIdOf('bos_token', '<s>');
    this.eosId = idOf('eos_token', '</s>');
    this.unkId = optionalIdOf('unk_token', '<unk>');

    const fim = tokenizerConfig.fim as Record<string, unknown> | undefined;
    if (fim && typeof fim === 'object') {
      const fimId = (key: 'prefix' | 'middle' | 'suffix'): number => {
        const name = tokenName(fim[key]);
        const id = name === undefined ? undefined : this.hfTokenizer.token_to_id(name);
        if (id === undefined) {
          throw new TokenizerError(`${configPath}: "fim.${key}" is missing or not a token of ${jsonPath}`);
        }
        return id;
      };
      const modes = Array.isArray(fim.modes)
        ? (fim.modes.filter((m) => m === 'psm' || m === 'spm') as FimMode[])
        : (['psm'] as FimMode[]);
      this.fim = { prefix: fimId('prefix'), middle: fimId('middle'), suffix: fimId('suffix'), modes };
    } else {
      const [prefix, middle, suffix] = [QWEN_FIM.prefix, QWEN_FIM.middle, QWEN_FIM.suffix].map((n) => this.hfTokenizer.token_to_id(n));
      const qwen = prefix !== undefined && middle !== undefined && suffix !== undefined;
      this.fim = qwen ? { prefix, middle, suffix, modes: ['psm'] } : undefined;
    }
  }

  /** Token ids of `text`. With addSpecialTokens (default) the post-processor template applies (BOS first, if any). */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (text.length === 0 && options.addSpecialTokens === false) return [];
    const tokenizer = options.parseSpecialTokens === false ? this.literal() : this.hfTokenizer;
    return tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** Text of `ids` as the Rust tokenizers' decode gives it, without clean-up of tokenization spaces. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new TokenizerError(`token id ${id} is outside the vocabulary of ${this.tokenizerJsonPath} (size ${this.vocabSize})`);
      }
    }
    return this.hfTokenizer.decode(ids as number[], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  /**
   * A fill-in-the-middle prompt (token level, no BOS, pieces encoded without special tokens):
   *   psm: <fim_prefix> prefix <fim_suffix> suffix <fim_middle>
   *   spm: <fim_prefix> <fim_suffix> suffix <fim_middle> prefix
   */
  fimPrompt(prefix: string, suffix: string, mode: FimMode = 'spm'): number[] {
    if (!this.fim) throw new TokenizerError(`${this.tokenizerJsonPath}: the model has no FIM tokens`);
    const p = this.encode(prefix, { addSpecialTokens: false, parseSpecialTokens: false });
    const s = this.encode(suffix, { addSpecialTokens: false, parseSpecialTokens: false });
    const { prefix: fp, middle: fm, suffix: fs_ } = this.fim;
    return mode === 'psm' ? [fp, ...p, fs_, ...s, fm] : [fp, fs_, ...s, fm, ...p];
  }

  private literal(): HfTokenizers.Tokenizer {
    if (!this.literalTokenizer) {
      // Non-special added tokens (none in this model) still match; special ones are dropped from the list, so
      // their strings go through the normalizer and BPE like any text. The template keeps its own BOS id.
      const addedTokens = Array.isArray(this.tokenizerJson.added_tokens) ? this.tokenizerJson.added_tokens : [];
      const plain = addedTokens.filter((t) => !(t as { special?: boolean }).special);
      this.literalTokenizer = new hf.Tokenizer({ ...this.tokenizerJson, added_tokens: plain }, this.tokenizerConfig);
    }
    return this.literalTokenizer;
  }

  /** True for the `<0xNN>` byte-fallback tokens (for this model ids 6..261). */
  isByteFallback(id: number): boolean {
    return this.byteTokenIds[id] === 1;
  }

  /** True for added tokens marked special (BOS, EOS, unk, FIM markers). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** The vocabulary string of one id (e.g. "▁return", "<0xE6>"), or undefined. */
  tokenText(id: number): string | undefined {
    return this.hfTokenizer.id_to_token(id);
  }
}
