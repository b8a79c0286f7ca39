/**
 * The engine as the language server and the CLI use it: a model loaded by the native addon plus its tokenizer (on
 * its own thread, ./tokenizerThread: parsing a large tokenizer.json never blocks the event loop),
 * with every request going through one scheduler (./scheduler: one at a time per engine, in order, cancellable,
 * never blocking the event loop). The only module that loads the addon (tests may inject one).
 *
 * Exported API:
 *
 *   const engine = await Engine.load(modelDir, { device: 'cpu', threads: 0 });
 *   engine.info / engine.tokenizer / engine.modelDir
 *
 *   const gen = engine.generate(
 *     { prompt: ids, maxTokens: 64, greedy: true },          // NativeGenerateRequest (ids, BOS already applied)
 *     { onToken: (id) => …, onText: (chunk) => …,            // streamed in order, before `result` resolves
 *       cancelPrevious: true });                              // cancel the running + queued requests first
 *   gen.cancel();                                             // stops before the next token
 *   const r = await gen.result;  // GenerationResult: tokens, text, stopReason, promptTokens, reusedTokens,
 *                                // evaluatedTokens, prefillMs, decodeMs
 *
 *   await engine.perplexity(ids, windows, seq)                // queued like a generation
 *   engine.stats                                              // totals of evaluated / reused tokens
 *   await engine.dispose()                                    // cancels everything, then frees the model
 *
 *   engine.setProfiling(true); engine.profile(); engine.resetProfile()   // op timings per device (not queued)
 *   await engine.copyBandwidth(256)                           // host memcpy GB/s (read + write), a worker thread
 *
 *   await Engine.bench({ synthetic: 'tiny', devices: ['cpu:0', 'cpu:1'] })   // the addon's benchmark
 *   const job = Engine.quantize({ source, output, method: 'awq', calibIds }, onProgress); await job.promise
 *
 * Requests run in the order they were made. A request that is cancelled before it starts resolves at once with
 * stopReason 'cancelled' and no tokens, without touching the KV cache. The KV cache is reused across requests
 * for the longest common prefix of token ids (the native engine reports reused/evaluated counts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { IncrementalDetokenizer } from './detokenizer';
import {
  loadAddon,
  type NativeAddon,
  type NativeBenchOptions,
  type NativeBenchResult,
  type NativeEngine,
  type NativeGenerateRequest,
  type NativeGenerateResult,
  type NativeLoadOptions,
  type NativeModelInfo,
  type NativePerplexityResult,
  type NativePlacement,
  type NativeProfile,
  type NativeQuantization,
  type NativeQuantizeOptions,
  type NativeQuantizeProgress,
} from './native';
import { Scheduler } from './scheduler';
import { ThreadTokenizer } from './tokenizerThread';

export interface EngineLoadOptions extends NativeLoadOptions {
  /** The addon to use (tests inject one); default: loadAddon(). */
  addon?: NativeAddon;
  /** Load the tokenizer (default true). Without it, `text` is '' and onText is not called. */
  tokenizer?: boolean;
  /** Abandon a tokenizer load that takes longer (default ../tokenizerThread's TOKENIZER_LOAD_TIMEOUT_MS). */
  tokenizerTimeoutMs?: number;
}

export interface GenerationOptions {
  /** Each generated id, in order, as soon as it is sampled (before `result` resolves). */
  onToken?: (token: number) => void;
  /** Decoded text as it becomes final (whole characters only, special tokens dropped). */
  onText?: (chunk: string) => void;
  /** Cancel the running request and every queued one before queueing this one. */
  cancelPrevious?: boolean;
  /** Called when the request leaves the queue and starts in the engine (not called when cancelled while queued). */
  onStart?: () => void;
}

export interface GenerationResult extends NativeGenerateResult {
  /** Decoded generated text, special tokens (EOS, FIM markers) dropped. */
  text: string;
  /** Milliseconds this request waited for earlier ones. */
  queuedMs: number;
}

export interface Generation {
  readonly result: Promise<GenerationResult>;
  /** Stops the request before its next token (or before it starts); result resolves with 'cancelled'. */
  cancel(): void;
}

export interface EngineStats {
  generations: number;
  /** Tokens run through the model, all requests together (prompt remainders + decode steps). */
  evaluatedTokens: number;
  /** Prompt tokens whose KV entries were reused instead of evaluated. */
  reusedTokens: number;
  last?: GenerationResult;
}

export class EngineError extends Error {}

/**
 * The model info with `devices` and `placement` always present: an addon from before the placement planner reports
 * neither, which means the whole model on its one device.
 */
export function withPlacement(info: Omit<NativeModelInfo, 'devices' | 'placement'> & Partial<Pick<NativeModelInfo, 'devices' | 'placement'>>): NativeModelInfo {
  const single = info.device || 'cpu';
  const placement: NativePlacement = info.placement ?? {
    mode: 'single',
    devices: [{ name: single, weightBytes: info.weightBytes, arenaBytes: 0 }],
    embed: single,
    lmHead: single,
    layers: Array.from({ length: info.numLayers }, () => single),
    experts: Array.from({ length: info.numLayers }, () => Array.from({ length: info.numExperts }, () => single)),
  };
  const devices = info.devices && info.devices.length > 0 ? info.devices : placement.devices.map((d) => d.name);
  return { ...info, devices, placement };
}

/** The result of a generation cancelled before it started: no tokens, the KV cache untouched. */
export function cancelledResult(request: NativeGenerateRequest): NativeGenerateResult {
  return { tokens: [], stopReason: 'cancelled', promptTokens: request.prompt.length, reusedTokens: 0, evaluatedTokens: 0, prefillMs: 0, decodeMs: 0 };
}

export class Engine {
  readonly info: NativeModelInfo;
  readonly stats: EngineStats = { generations: 0, evaluatedTokens: 0, reusedTokens: 0 };
  /** Every request to the native engine goes through this one queue. */
  private readonly scheduler = new Scheduler();
  private disposed = false;

  private constructor(
    readonly modelDir: string,
    private readonly native: NativeEngine,
    readonly tokenizer: ThreadTokenizer | undefined,
    private readonly addon: NativeAddon,
  ) {
    this.info = withPlacement(native.info());
  }

  /**
   * Loads DIR (config.json, safetensors weights, tokenizer.json). Rejects with an Error naming the missing or
   * inconsistent file / tensor / field.
   */
  static async load(modelDir: string, options: EngineLoadOptions = {}): Promise<Engine> {
    const dir = path.resolve(modelDir);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(dir);
    } catch {
      throw new EngineError(`model folder not found: ${dir}`);
    }
    if (!stat.isDirectory()) throw new EngineError(`not a model folder: ${dir}`);
    const addon = options.addon ?? loadAddon();
    const { addon: _addon, tokenizer: _tok, tokenizerTimeoutMs, ...nativeOptions } = options;
    // Both off the event loop and side by side: the tokenizer on its thread, the weights on the addon's.
    const [tok, nat] = await Promise.allSettled([
      options.tokenizer === false ? Promise.resolve(undefined) : ThreadTokenizer.load(dir, { timeoutMs: tokenizerTimeoutMs }),
      addon.loadModel(dir, nativeOptions),
    ]);
    if (tok.status === 'rejected' || nat.status === 'rejected') {
      if (tok.status === 'fulfilled') await tok.value?.dispose();
      if (nat.status === 'fulfilled') nat.value.dispose();
      throw tok.status === 'rejected' ? tok.reason : (nat as PromiseRejectedResult).reason;
    }
    const tokenizer = tok.value;
    const native = nat.value;
    if (tokenizer) {
      // An id the tokenizer can produce must have an embedding row: checked here, where both files are known, not
      // at the first prompt.
      const vocabSize = native.info().vocabSize;
      if (tokenizer.vocabSize > vocabSize) {
        native.dispose();
        await tokenizer.dispose();
        throw new EngineError(
          `${path.join(dir, 'tokenizer.json')} has token ids up to ${tokenizer.vocabSize - 1}, beyond the vocabulary of ` +
            `${path.join(dir, 'config.json')} (vocab_size ${vocabSize}): the tokenizer does not belong to this model`,
        );
      }
    }
    return new Engine(dir, native, tokenizer, addon);
  }

  /** The addon's benchmark: it loads the model folder (or builds the synthetic one) itself, apart from any Engine. */
  static bench(options: NativeBenchOptions, addon: NativeAddon = loadAddon()): Promise<NativeBenchResult> {
    return addon.bench(options);
  }

  /** Quantizes a 16-bit model folder (a long job on the addon's worker threads; cancel() leaves nothing on disk). */
  static quantize(
    options: NativeQuantizeOptions,
    onProgress?: (p: NativeQuantizeProgress) => void,
    addon: NativeAddon = loadAddon(),
  ): NativeQuantization {
    return addon.quantize(options, onProgress);
  }

  /** True while a request runs or waits. */
  get busy(): boolean {
    return this.scheduler.busy;
  }

  /** Queues a generation; see the file comment. */
  generate(request: NativeGenerateRequest, options: GenerationOptions = {}): Generation {
    this.assertLive();
    if (options.cancelPrevious) this.cancelAll();
    const queuedAt = performance.now();
    const detok =
      this.tokenizer && options.onText ? new IncrementalDetokenizer(this.tokenizer, { skipSpecialTokens: true }) : undefined;
    const job = this.scheduler.submit<GenerationResult>({
      onStart: options.onStart,
      cancelledBeforeStart: () => ({ ...cancelledResult(request), text: '', queuedMs: performance.now() - queuedAt }),
      run: async (ctx) => {
        const queuedMs = performance.now() - queuedAt;
        const onToken = (token: number): void => {
          options.onToken?.(token);
          if (detok) {
            const chunk = detok.push(token);
            if (chunk) options.onText!(chunk);
          }
        };
        const streaming = options.onToken || detok ? onToken : undefined;
        // A request the addon rejects (bad ids, bad sampling values) throws here; its promise rejects.
        const handle = this.native.generate(request, streaming);
        ctx.onCancel(() => handle.cancel());
        const r = await handle.result;
        if (detok) {
          const rest = detok.flush();
          if (rest) options.onText!(rest);
        }
        const text = this.tokenizer ? this.tokenizer.decode(r.tokens, { skipSpecialTokens: true }) : '';
        const full: GenerationResult = { ...r, text, queuedMs };
        this.stats.generations++;
        this.stats.evaluatedTokens += r.evaluatedTokens;
        this.stats.reusedTokens += r.reusedTokens;
        this.stats.last = full;
        return full;
      },
    });
    return { result: job.result, cancel: () => job.cancel() };
  }

  /** Perplexity over `windows` windows of `seq` tokens of `ids` (see fixtures README); queued like a generation. */
  perplexity(ids: Int32Array, windows: number, seq: number): Promise<NativePerplexityResult> {
    this.assertLive();
    return this.scheduler.submit<NativePerplexityResult>({
      cancelledBeforeStart: () => {
        throw new EngineError('perplexity cancelled');
      },
      run: () => this.native.perplexity(ids, windows, seq),
    }).result;
  }

  /**
   * Op timing on every device of the model. Not queued: the engine switches, copies and resets its counters under a
   * short lock, so these answer at once even while a generation runs.
   */
  setProfiling(enabled: boolean): void {
    this.assertLive();
    this.native.setProfiling(enabled);
  }

  profile(): NativeProfile {
    this.assertLive();
    return this.native.profile();
  }

  resetProfile(): void {
    this.assertLive();
    this.native.resetProfile();
  }

  /**
   * The copy ceiling (read + write GB/s over `mib` MiB) of `device`: the host memcpy for 'cpu' (the ceiling of CPU
   * ops), a copy within the GPU's memory for 'cuda:N'. Measured on a worker thread.
   */
  copyBandwidth(mib: number, device = 'cpu'): Promise<number> {
    return this.addon.measureCopyBandwidth({ mib, threads: this.info.threads, device });
  }

  /** Token ids held in the KV cache (only meaningful while idle). */
  cachedTokens(): number[] {
    this.assertLive();
    return this.native.cachedTokens();
  }

  /** Empties the KV cache once the queue has drained. */
  async reset(): Promise<void> {
    this.assertLive();
    await this.idle();
    this.native.reset();
  }

  /** Cancels the running request and every queued one. */
  cancelAll(): void {
    this.scheduler.cancelAll();
  }

  /** Resolves once nothing runs or waits. */
  idle(): Promise<void> {
    return this.scheduler.idle();
  }

  /** Cancels everything, waits for the running request to end, then frees the model. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.cancelAll();
    this.disposed = true;
    await this.idle();
    this.native.dispose();
    await this.tokenizer?.dispose();
  }

  private assertLive(): void {
    if (this.disposed) throw new EngineError('the engine has been disposed');
  }
}
