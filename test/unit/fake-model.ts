/**
 * A deterministic stand-in for a loaded model, for unit tests of the pipeline without native code.
 * Tokenizer: one token per UTF-16 unit (id = code + 1000); markers get small ids. Generation replays the text
 * `continuation(prompt)` returns, one token per `msPerToken`, and honours cancel() before each token, like the
 * engine. KV reuse is simulated: the longest common prefix of the previous prompt + output and the new prompt.
 * Like the real Engine, generations go through the server's Scheduler in front of a fake native engine that
 * rejects a second concurrent generation.
 */
import type * as engineModule from '../../server/src/engine';
import type { NativeGenerateRequest, NativeGenerateResult } from '../../server/src/native';
import type { CompletionModel, ModelGeneration, ModelGenerationOptions } from '../../server/src/completion/model';
import type * as schedulerModule from '../../server/src/scheduler';
import type { VocabularyInfo } from '../../server/src/completion/templates';
import { serverModule } from '../helpers';

const { Scheduler } = serverModule<typeof schedulerModule>('scheduler');
const { cancelledResult, withPlacement } = serverModule<typeof engineModule>('engine');

export const FAKE_MARKERS: Record<string, number> = {
  '<s>': 1, '</s>': 2, '<fim_prefix>': 3, '<fim_middle>': 4, '<fim_suffix>': 5,
  '<|fim_prefix|>': 6, '<|fim_suffix|>': 7, '<|fim_middle|>': 8, '<|endoftext|>': 9,
  '[SUFFIX]': 10, '[PREFIX]': 11, '<PRE>': 12, '<SUF>': 13, '<MID>': 14, '<EOT>': 15,
  '<｜fim▁begin｜>': 16, '<｜fim▁hole｜>': 17, '<｜fim▁end｜>': 18, '<|file_sep|>': 19,
};
const NAME_OF = new Map(Object.entries(FAKE_MARKERS).map(([k, v]) => [v, k]));

export function charIds(text: string): number[] {
  return [...text].flatMap((ch) => Array.from({ length: ch.length }, (_, i) => ch.charCodeAt(i) + 1000));
}

export interface FakeModelOptions {
  markers?: string[];
  fimModes?: string[];
  msPerToken?: number;
  /** Text generated for a prompt (ids) — the "model". */
  continuation?: (prompt: number[], model: FakeModel) => string;
}

export class FakeModel implements CompletionModel {
  readonly name = 'fake';
  readonly path = '/fake';
  readonly info = withPlacement({
    description: 'fake model', device: 'cpu', quantization: 'none', contextLength: 4096, modelType: 'fake', hiddenSize: 8,
    intermediateSize: 8, numLayers: 2, numHeads: 1, numKvHeads: 1, headDim: 8, numExperts: 2, topK: 1, vocabSize: 70_000,
    bosTokenId: 1, eosTokenId: 2, maxPositionEmbeddings: 4096, slidingWindow: 0, weightBytes: 0, threads: 1,
  });
  readonly bosId = 1;
  readonly eosId = 2;
  readonly vocab: VocabularyInfo;
  generations: Array<{ req: NativeGenerateRequest; result?: NativeGenerateResult }> = [];
  running = 0;
  maxRunning = 0;
  /** decode() calls and the ids they decoded, all together (tests check decoding work stays linear). */
  decodeCalls = 0;
  decodedIds = 0;
  private cached: number[] = [];
  private readonly scheduler = new Scheduler();

  constructor(private readonly opts: FakeModelOptions = {}) {
    const names = opts.markers ?? ['<s>', '</s>', '<fim_prefix>', '<fim_middle>', '<fim_suffix>'];
    this.vocab = { markers: new Map(names.map((n) => [n, FAKE_MARKERS[n]])), fimModes: opts.fimModes ?? ['psm', 'spm'] };
  }

  encode(text: string): number[] {
    return charIds(text);
  }

  markerId(name: string): number | undefined {
    return this.vocab.markers.get(name);
  }

  decode(ids: readonly number[]): string {
    this.decodeCalls++;
    this.decodedIds += ids.length;
    return ids.filter((id) => id >= 1000).map((id) => String.fromCharCode(id - 1000)).join('');
  }

  /** Prompt as readable text: markers by name, characters as themselves. */
  show(ids: readonly number[]): string {
    return ids.map((id) => (id >= 1000 ? String.fromCharCode(id - 1000) : NAME_OF.get(id) ?? `#${id}`)).join('');
  }

  cachedTokens(): number[] {
    return [...this.cached];
  }

  isByteFallback(): boolean {
    return false;
  }

  generate(req: NativeGenerateRequest, options: ModelGenerationOptions = {}): ModelGeneration {
    const job = this.scheduler.submit<NativeGenerateResult>({
      onStart: options.onStart,
      cancelledBeforeStart: () => cancelledResult(req),
      run: (ctx) => {
        const g = this.nativeGenerate(req, options.onToken);
        ctx.onCancel(() => g.cancel());
        return g.result;
      },
    });
    return { result: job.result, cancel: () => job.cancel() };
  }

  /** The fake native engine: one generation at a time, like the addon. */
  private nativeGenerate(req: NativeGenerateRequest, onToken?: (token: number) => void): ModelGeneration {
    if (this.running > 0) throw new Error('engine busy: one generation at a time');
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    const record: { req: NativeGenerateRequest; result?: NativeGenerateResult } = { req };
    this.generations.push(record);
    let cancelled = false;
    const prompt = req.prompt;
    let reused = 0;
    while (reused < Math.min(prompt.length - 1, this.cached.length) && this.cached[reused] === prompt[reused]) reused++;
    const out = charIds(this.opts.continuation ? this.opts.continuation(prompt, this) : '').concat([this.eosId]);
    const ms = this.opts.msPerToken ?? 1;
    const result = (async (): Promise<NativeGenerateResult> => {
      const tokens: number[] = [];
      let stopReason: NativeGenerateResult['stopReason'] = 'max_tokens';
      for (let i = 0; i < req.maxTokens; i++) {
        if (cancelled) {
          stopReason = 'cancelled';
          break;
        }
        await new Promise((r) => setTimeout(r, ms));
        const t = out[Math.min(i, out.length - 1)];
        tokens.push(t);
        onToken?.(t);
        if (req.stopIds?.includes(t) || t === this.eosId) {
          stopReason = t === this.eosId ? 'eos' : 'stop_id';
          break;
        }
      }
      this.cached = [...prompt, ...tokens];
      this.running--;
      const r: NativeGenerateResult = {
        tokens, stopReason, promptTokens: prompt.length, reusedTokens: reused,
        evaluatedTokens: prompt.length - reused + tokens.length, prefillMs: 1, decodeMs: tokens.length * ms,
      };
      record.result = r;
      return r;
    })();
    return { result, cancel: () => { cancelled = true; } };
  }

  dispose(): void {}
}
