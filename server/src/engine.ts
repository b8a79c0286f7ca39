/**
 * The engine as the language server and the CLI use it: a model loaded by the native addon plus its tokenizer,
 * with generations serialised (one at a time per engine, never blocking the event loop).
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
  type NativeEngine,
  type NativeGenerateRequest,
  type NativeGenerateResult,
  type NativeLoadOptions,
  type NativeModelInfo,
  type NativePerplexityResult,
} from './native';
import { MixqTokenizer } from './tokenizer';

export interface EngineLoadOptions extends NativeLoadOptions {
  /** The addon to use (tests inject one); default: loadAddon(). */
  addon?: NativeAddon;
  /** Load the tokenizer (default true). Without it, `text` is '' and onText is not called. */
  tokenizer?: boolean;
}

export interface GenerationOptions {
  /** Each generated id, in order, as soon as it is sampled (before `result` resolves). */
  onToken?: (token: number) => void;
  /** Decoded text as it becomes final (whole characters only, special tokens dropped). */
  onText?: (chunk: string) => void;
  /** Cancel the running request and every queued one before queueing this one. */
  cancelPrevious?: boolean;
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

/** One queued unit of work: a generation or a perplexity run. */
interface Job {
  cancelled: boolean;
  nativeCancel?: () => void;
  /** Runs the job; resolves (never rejects) to the function that settles its promise, called once it has left the queue. */
  start(): Promise<() => void>;
  resolveCancelled(): void;
}

export class EngineError extends Error {}

export class Engine {
  readonly info: NativeModelInfo;
  readonly stats: EngineStats = { generations: 0, evaluatedTokens: 0, reusedTokens: 0 };
  private readonly queue: Job[] = [];
  private running: Job | undefined;
  /** Settles when the running job has ended and the next one (if any) has been started. */
  private runningDone: Promise<void> | undefined;
  private disposed = false;

  private constructor(
    readonly modelDir: string,
    private readonly native: NativeEngine,
    readonly tokenizer: MixqTokenizer | undefined,
  ) {
    this.info = native.info();
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
    const tokenizer = options.tokenizer === false ? undefined : MixqTokenizer.load(dir);
    const addon = options.addon ?? loadAddon();
    const { addon: _addon, tokenizer: _tok, ...nativeOptions } = options;
    const native = await addon.loadModel(dir, nativeOptions);
    return new Engine(dir, native, tokenizer);
  }

  /** True while a request runs or waits. */
  get busy(): boolean {
    return this.running !== undefined || this.queue.length > 0;
  }

  /** Queues a generation; see the file comment. */
  generate(request: NativeGenerateRequest, options: GenerationOptions = {}): Generation {
    this.assertLive();
    if (options.cancelPrevious) this.cancelAll();
    const queuedAt = performance.now();
    let settle!: { resolve: (r: GenerationResult) => void; reject: (e: unknown) => void };
    const result = new Promise<GenerationResult>((resolve, reject) => (settle = { resolve, reject }));
    const detok =
      this.tokenizer && options.onText ? new IncrementalDetokenizer(this.tokenizer, { skipSpecialTokens: true }) : undefined;

    const job: Job = {
      cancelled: false,
      resolveCancelled: () =>
        settle.resolve({
          tokens: [],
          stopReason: 'cancelled',
          promptTokens: request.prompt.length,
          reusedTokens: 0,
          evaluatedTokens: 0,
          prefillMs: 0,
          decodeMs: 0,
          text: '',
          queuedMs: performance.now() - queuedAt,
        }),
      start: async () => {
        const queuedMs = performance.now() - queuedAt;
        const onToken = (token: number): void => {
          options.onToken?.(token);
          if (detok) {
            const chunk = detok.push(token);
            if (chunk) options.onText!(chunk);
          }
        };
        const streaming = options.onToken || detok ? onToken : undefined;
        try {
          // A request the addon rejects (bad ids, bad sampling values) throws here; its promise rejects.
          const handle = this.native.generate(request, streaming);
          job.nativeCancel = () => handle.cancel();
          if (job.cancelled) handle.cancel();
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
          return () => settle.resolve(full);
        } catch (e) {
          return () => settle.reject(e);
        }
      },
    };
    this.enqueue(job);
    return {
      result,
      cancel: () => this.cancelJob(job),
    };
  }

  /** Perplexity over `windows` windows of `seq` tokens of `ids` (see fixtures README); queued like a generation. */
  perplexity(ids: Int32Array, windows: number, seq: number): Promise<NativePerplexityResult> {
    this.assertLive();
    return new Promise<NativePerplexityResult>((resolve, reject) => {
      const job: Job = {
        cancelled: false,
        resolveCancelled: () => reject(new EngineError('perplexity cancelled')),
        start: () =>
          this.native.perplexity(ids, windows, seq).then(
            (r) => () => resolve(r),
            (e: unknown) => () => reject(e),
          ),
      };
      this.enqueue(job);
    });
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
    for (const job of this.queue) this.cancelJob(job);
    if (this.running) this.cancelJob(this.running);
  }

  /** Resolves once nothing runs or waits. */
  async idle(): Promise<void> {
    while (this.runningDone) await this.runningDone;
  }

  /** Cancels everything, waits for the running request to end, then frees the model. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.cancelAll();
    this.disposed = true;
    await this.idle();
    this.native.dispose();
  }

  private assertLive(): void {
    if (this.disposed) throw new EngineError('the engine has been disposed');
  }

  private cancelJob(job: Job): void {
    if (job.cancelled) return;
    job.cancelled = true;
    if (job === this.running) {
      job.nativeCancel?.();
      return;
    }
    const i = this.queue.indexOf(job);
    if (i >= 0) {
      this.queue.splice(i, 1);
      job.resolveCancelled();
    }
  }

  private enqueue(job: Job): void {
    this.queue.push(job);
    this.pump();
  }

  private pump(): void {
    if (this.running) return;
    const job = this.queue.shift();
    if (!job) return;
    this.running = job;
    this.runningDone = job.start().then((settle) => {
      // Settled after leaving `running`, so `busy` is false when the last result resolves.
      this.running = undefined;
      this.runningDone = undefined;
      this.pump();
      settle();
    });
  }
}
