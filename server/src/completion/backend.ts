/**
 * Where the completion pipeline's text comes from: a backend turns the document at the cursor into a stream of
 * generated text, cancellable at any point. The pipeline around it (../service: cache, debounce, early stop by
 * post-processing, prefetch, alternatives) is the same for every backend.
 *
 *   local   LocalBackend (this file): the FIM prompt built at the token level (./prompt) and the engine's streamed
 *           generation, detokenized incrementally;
 *   openai  RemoteBackend (./remote): an OpenAI-compatible `/v1/completions` server (vLLM, llama.cpp's server,
 *           Ollama, `mixq serve`) over HTTP with `stream: true`; cancel closes the stream.
 */
import { IncrementalDetokenizer } from '../detokenizer';
import type { CompletionDocument, ContextProvider } from './context';
import type { CompletionModel } from './model';
import { buildPrompt, type BuiltPrompt } from './prompt';
import { chooseTemplate, type FimTemplate } from './templates';
import type { FimTemplateSetting } from '#protocol';

/** Seeded sampling (alternatives); absent: greedy. */
export interface Sampling {
  seed: number;
  temperature: number;
  topP: number;
}

export interface BackendRequest {
  doc: CompletionDocument;
  maxTokens: number;
  /** Text stop sequences (the backend may stop on them; post-processing cuts at them either way). */
  stopSequences: readonly string[];
  maxPrefixTokens: number;
  maxSuffixTokens: number;
  /** Share of the prefix budget snippets from other files may take (0: none). */
  snippetShare: number;
  sampling?: Sampling;
}

export interface BackendGenerationOptions {
  /** The generation left the backend's queue and runs (the time cap counts from here). */
  onStart?: () => void;
  /** Generated text as it becomes final, in order. */
  onText?: (chunk: string) => void;
}

export interface BackendResult {
  /** The text generated before the end or the cancel (chunks that arrive after cancel() are not part of it). */
  text: string;
  /** eos, max_tokens, stop, cancelled, … */
  stopReason: string;
  promptTokens: number;
  reusedTokens: number;
  /** Tokens run through the model (prompt remainder + decode steps); 0 when the backend does not say. */
  evaluatedTokens: number;
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
  prompt?: BuiltPrompt;
}

export interface BackendGeneration {
  /** Rejects with a BackendError when the backend fails (unreachable, HTTP error, broken stream). */
  readonly result: Promise<BackendResult>;
  cancel(): void;
}

/** A failure of the backend itself (not of the request's cancellation): shown in the status, the next request retries. */
export class BackendError extends Error {}

export interface CompletionBackend {
  /** 'local' or 'openai'. */
  readonly kind: 'local' | 'openai';
  /** The FIM layout in use ('server' when the remote server lays the prompt out). */
  readonly templateId: string;
  readonly templateReason: string;
  /** Characters of the longest vocabulary piece, when known (../window). */
  readonly maxTokenChars?: number;
  generate(req: BackendRequest, options: BackendGenerationOptions): BackendGeneration;
}

/** The local engine: token-level FIM prompt, streamed generation with the template's stop ids. */
export class LocalBackend implements CompletionBackend {
  readonly kind = 'local';
  readonly template: FimTemplate;
  readonly templateReason: string;
  private readonly stopIds: number[];

  constructor(
    readonly model: CompletionModel,
    fimTemplate: FimTemplateSetting,
    private readonly providers: readonly ContextProvider[] = [],
  ) {
    const choice = chooseTemplate(fimTemplate, model.vocab);
    this.template = choice.template;
    this.templateReason = choice.reason;
    const ids = new Set<number>();
    for (const name of this.template.stopTokens) {
      const id = model.markerId(name);
      if (id !== undefined) ids.add(id);
    }
    if (model.eosId !== undefined) ids.add(model.eosId);
    this.stopIds = [...ids];
  }

  get templateId(): string {
    return this.template.id;
  }

  get maxTokenChars(): number | undefined {
    return this.model.maxTokenChars;
  }

  generate(req: BackendRequest, options: BackendGenerationOptions): BackendGeneration {
    const prompt = buildPrompt(this.model, this.template, req.doc, {
      maxPrefixTokens: req.maxPrefixTokens,
      maxSuffixTokens: req.maxSuffixTokens,
      snippetShare: req.snippetShare,
    }, this.providers);
    const streamed: number[] = [];
    const detok = new IncrementalDetokenizer(this.model);
    let cancelled = false;
    const sampling = req.sampling
      ? { greedy: false, seed: req.sampling.seed, temperature: req.sampling.temperature, topP: req.sampling.topP }
      : { greedy: true };
    const generation = this.model.generate(
      { prompt: prompt.ids, maxTokens: req.maxTokens, stopIds: this.stopIds, ...sampling },
      {
        onStart: options.onStart,
        onToken: (token) => {
          // The engine may sample a token or two after cancel(): they are not part of the answer.
          if (cancelled || this.stopIds.includes(token)) return;
          streamed.push(token);
          const chunk = detok.push(token);
          if (chunk) options.onText?.(chunk);
        },
      },
    );
    const result = generation.result.then((r): BackendResult => {
      // Cancelled: what was streamed before; else the result's ids are authoritative (the callback may lag).
      const kept = cancelled ? streamed : r.tokens.filter((t) => !this.stopIds.includes(t));
      return {
        text: this.model.decode(kept),
        stopReason: r.stopReason,
        promptTokens: r.promptTokens,
        reusedTokens: r.reusedTokens,
        evaluatedTokens: r.evaluatedTokens,
        generatedTokens: r.tokens.length,
        prefillMs: r.prefillMs,
        decodeMs: r.decodeMs,
        prompt,
      };
    });
    return {
      result,
      cancel: () => {
        cancelled = true;
        generation.cancel();
      },
    };
  }
}
