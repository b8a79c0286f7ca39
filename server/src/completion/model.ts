/**
 * What the completion pipeline needs from a loaded model: a tokenizer view (prompt building, decoding) and the
 * engine's asynchronous generate with cancel. `openCompletionModel` builds it from a model folder over
 * ../engine (native engine + the model's tokenizer); unit tests substitute their own implementation.
 */
import * as path from 'node:path';

import { Engine, type EngineLoadOptions, type GenerationOptions } from '../engine';
import type { NativeGenerateRequest, NativeGenerateResult, NativeModelInfo, NativeProfile } from '../native';
import type { ThreadTokenizer } from '../tokenizerThread';
import type { PromptTokenizer } from './prompt';
import type { VocabularyInfo } from './templates';

export interface ModelGeneration {
  readonly result: Promise<NativeGenerateResult>;
  /** Queued: dropped (never runs). Running: stops before the next token. Either way stopReason is 'cancelled'. */
  cancel(): void;
}

/** onToken: each id as soon as it is sampled; onStart: the generation left the engine's queue and runs. */
export type ModelGenerationOptions = Pick<GenerationOptions, 'onToken' | 'onStart'>;

/** The engine's op timings (../profiling); a model without them (unit tests' fakes) reports an empty profile. */
export interface ModelProfiling {
  readonly vocabSize: number;
  setProfiling(enabled: boolean): void;
  profile(): NativeProfile;
  resetProfile(): void;
  /** Copy GB/s (read + write) over `mib` MiB on `device` (default the host's memcpy), on a worker thread. */
  copyBandwidth(mib: number, device?: string): Promise<number>;
}

export interface CompletionModel extends PromptTokenizer {
  readonly name: string;
  readonly path: string;
  readonly info: Pick<NativeModelInfo, 'description' | 'device' | 'quantization' | 'contextLength' | 'devices' | 'placement'>;
  readonly eosId: number | undefined;
  readonly vocab: VocabularyInfo;
  /** Text of generated ids, special tokens skipped. */
  decode(ids: readonly number[]): string;
  /** A `<0xNN>` byte-fallback token (for the incremental detokenizer). */
  isByteFallback(id: number): boolean;
  /** Characters of the longest vocabulary piece (bounds the text a token budget can use, ./window); absent: unknown. */
  readonly maxTokenChars?: number;
  /**
   * Queues a generation in the engine's one scheduler: generations run one at a time, in submission order; a
   * cancelled queued one never runs.
   */
  generate(req: NativeGenerateRequest, options?: ModelGenerationOptions): ModelGeneration;
  readonly profiling?: ModelProfiling;
  dispose(): void | Promise<void>;
}

export class EngineCompletionModel implements CompletionModel {
  readonly name: string;
  readonly maxTokenChars: number;
  readonly vocab: VocabularyInfo;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly info: NativeModelInfo;
  readonly tokenizer: ThreadTokenizer;
  readonly profiling: ModelProfiling;

  constructor(readonly engine: Engine) {
    if (!engine.tokenizer) throw new Error('the completion model needs the tokenizer');
    this.tokenizer = engine.tokenizer;
    this.name = path.basename(engine.modelDir);
    this.info = engine.info;
    this.bosId = this.tokenizer.bosId;
    this.eosId = this.tokenizer.eosId;
    this.vocab = { markers: this.tokenizer.facts.markers, fimModes: this.tokenizer.fim?.modes };
    this.profiling = {
      vocabSize: engine.info.vocabSize,
      setProfiling: (on) => engine.setProfiling(on),
      profile: () => engine.profile(),
      resetProfile: () => engine.resetProfile(),
      copyBandwidth: (mib, device) => engine.copyBandwidth(mib, device),
    };
    this.maxTokenChars = this.tokenizer.facts.longestPiece;
  }

  get path(): string {
    return this.engine.modelDir;
  }

  encode(text: string): number[] {
    return this.tokenizer.encode(text, { addSpecialTokens: false });
  }

  markerId(name: string): number | undefined {
    return this.vocab.markers.get(name);
  }

  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: true });
  }

  isByteFallback(id: number): boolean {
    return this.tokenizer.isByteFallback(id);
  }

  generate(req: NativeGenerateRequest, options: ModelGenerationOptions = {}): ModelGeneration {
    return this.engine.generate(req, options);
  }

  dispose(): Promise<void> {
    return this.engine.dispose();
  }
}

export async function openCompletionModel(dir: string, opts: EngineLoadOptions): Promise<EngineCompletionModel> {
  return new EngineCompletionModel(await Engine.load(dir, opts));
}
