/**
 * The completion pipeline: request → cache → adaptive debounce → wait for the engine → prompt → streamed generation
 * with early stop → post-processing → answer; with cancellation at every step.
 *
 * One engine runs one generation at a time, so the newest request wins: a new request (or an edit of the document)
 * cancels every older one. The engine's one scheduler (../scheduler, inside the model's generate) orders the
 * generations; this service keeps no queue of its own. A request still debouncing, or queued in the scheduler,
 * is dropped at once; a generating one is cancelled inside the engine, which stops before its next token, while
 * the new request waits behind it in the scheduler. Streamed tokens go through the incremental detokenizer, so
 * the early-stop check reads the text so far without decoding all tokens again at every token. The engine keeps
 * the KV cache of the previous prompt + generated tokens and reuses the longest common prefix, so with a layout
 * that grows at its end (SPM, prefix-only) a keystroke evaluates only the last few prompt tokens.
 *
 * Prefetch: after answering with suggestion S, the service queues the generation of the suggestion for
 * the document with S accepted, and caches it; Tab then gets the next suggestion from the cache. The prompt is the
 * previous one plus S, whose KV entries the engine holds already, so this costs little more than its generation.
 * A prefetch yields to any request, except one for exactly its state, which waits for it instead.
 */
import type { CompletionCounters, CompletionTiming, ServerSettings } from '#protocol';
import { BackendError, LocalBackend, type BackendResult, type CompletionBackend, type Sampling } from './backend';
import { CompletionCache, type CacheKey } from './cache';
import type { CompletionDocument, ContextProvider } from './context';
import { AdaptiveDebounce } from './debounce';
import type { CompletionModel } from './model';
import { postprocess, postprocessContext, type PostprocessContext } from './postprocess';
import type { BuiltPrompt } from './prompt';

export interface CompletionRequest extends CompletionDocument {
  version: number;
  /** Explicitly invoked by the user (no debounce). */
  invoked: boolean;
  /** The document's version now; undefined once it was closed. */
  currentVersion(): number | undefined;
  /** Client-side cancellation ($/cancelRequest). */
  onClientCancel?(listener: () => void): void;
}

export type CancelReason = 'superseded' | 'client' | 'edited' | 'stale' | 'shutdown';

export type CompletionOutcome =
  /** `alternatives`: further different suggestions (explicit triggers only), `text` first among them. */
  | { kind: 'suggestion'; text: string; alternatives?: string[]; timing: CompletionTiming; prompt?: BuiltPrompt }
  | { kind: 'empty'; reason: string; timing: CompletionTiming; prompt?: BuiltPrompt }
  | { kind: 'cancelled'; reason: CancelReason; stage: 'waiting' | 'generating' | 'done' }
  /** The backend failed (remote server unreachable, HTTP error, broken stream): `message` says how. */
  | { kind: 'error'; message: string };

export type ServiceSettings = Pick<ServerSettings,
  'maxTokens' | 'timeCapMs' | 'debounceMs' | 'fimTemplate' | 'maxPrefixTokens' | 'maxSuffixTokens' | 'stopSequences'
  | 'contextFromOpenFiles' | 'prefetch'> & Partial<Pick<ServerSettings, 'alternatives'>>;

/** Share of the prefix budget snippets from other files may take. */
const SNIPPET_SHARE = 0.25;

/**
 * Sampling of the alternatives on an explicit trigger: seeds ALT_SEED_BASE, +1, … (reproducible), at most
 * ALT_TRIES_PER_CANDIDATE tries per wanted candidate (a small model often samples the same text twice).
 */
const ALT_SAMPLING = { temperature: 0.8, topP: 0.95 };
const ALT_SEED_BASE = 1;
const ALT_TRIES_PER_CANDIDATE = 2;

/** One request's (or prefetch's) cancellation state. */
class Ticket {
  reason: CancelReason | undefined;
  private readonly listeners: Array<() => void> = [];
  private settle!: () => void;
  /** Settles when the request/prefetch has finished, however it ended. */
  readonly finished = new Promise<void>((resolve) => (this.settle = resolve));
  constructor(
    readonly uri: string,
    /** The cache's key of the document state it computes for. */
    readonly stateKey: string,
    readonly speculative = false,
  ) {}
  finish(): void {
    this.settle();
  }
  get cancelled(): boolean {
    return this.reason !== undefined;
  }
  cancel(reason: CancelReason): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    for (const l of this.listeners.splice(0)) l();
  }
  onCancel(listener: () => void): void {
    if (this.reason !== undefined) listener();
    else this.listeners.push(listener);
  }
  /** Resolves after `ms`, or at once when cancelled. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.onCancel(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

function keyOf(req: CompletionRequest): CacheKey {
  // Offsets in the whole document: windows of two states may start at different places (./window).
  return { uri: req.uri, offset: (req.windowStart ?? 0) + req.offset, prefix: req.text.slice(0, req.offset), suffix: req.text.slice(req.offset) };
}

export function zeroCounters(): CompletionCounters {
  return { requests: 0, completed: 0, empty: 0, cacheHits: 0, cancelled: 0, cancelledWaiting: 0, cancelledGenerating: 0, staleVersion: 0, errors: 0, evaluatedTokens: 0, maxCancelToStopMs: 0, prefetched: 0, prefetchHits: 0 };
}

function isBackend(x: CompletionModel | CompletionBackend): x is CompletionBackend {
  return typeof (x as CompletionBackend).templateId === 'string';
}

export class CompletionService {
  readonly backend: CompletionBackend;
  /** The last backend failure, until a request succeeds again (shown in the status). */
  backendError: string | undefined;
  readonly cache = new CompletionCache();
  counters: CompletionCounters = zeroCounters();
  last: CompletionTiming | undefined;
  activeGenerations = 0;
  pendingRequests = 0;

  private readonly debounce: AdaptiveDebounce;
  private readonly live = new Set<Ticket>();
  /** Generations submitted to the engine and not yet settled (shutdown waits for them). */
  private readonly generations = new Set<Promise<unknown>>();
  private disposed = false;

  /** `source`: a loaded model (the local backend over it, with the template `settings.fimTemplate` picks) or a backend. */
  constructor(
    source: CompletionModel | CompletionBackend,
    private settings: ServiceSettings,
    providers: readonly ContextProvider[] = [],
    private readonly onChange: () => void = () => {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.backend = isBackend(source) ? source : new LocalBackend(source, settings.fimTemplate, providers);
    this.debounce = new AdaptiveDebounce(settings.debounceMs);
  }

  /** The FIM layout in use (`server` for a remote backend, which lays out its own). */
  get template(): { id: string } {
    return { id: this.backend.templateId };
  }

  get templateReason(): string {
    return this.backend.templateReason;
  }

  /** Settings that do not need a new model (a different template does: the server rebuilds the service). */
  updateSettings(settings: ServiceSettings): void {
    const outputChanged = settings.maxTokens !== this.settings.maxTokens || settings.maxPrefixTokens !== this.settings.maxPrefixTokens
      || settings.maxSuffixTokens !== this.settings.maxSuffixTokens || settings.contextFromOpenFiles !== this.settings.contextFromOpenFiles
      || settings.stopSequences.join('\u0000') !== this.settings.stopSequences.join('\u0000')
      || settings.alternatives !== this.settings.alternatives;
    this.settings = settings;
    this.debounce.baseMs = settings.debounceMs;
    if (outputChanged) this.cache.clear();
  }

  resetCounters(): void {
    this.counters = zeroCounters();
    this.last = undefined;
  }

  /**
   * An edit of `uri`: requests computed for its old text are stale, stop them now. A prefetch is left running: the
   * edit may be the acceptance it computes for (a request for another state will supersede it).
   */
  documentChanged(uri: string): void {
    for (const t of this.live) if (t.uri === uri && !t.speculative) t.cancel('edited');
  }

  /** Cancels everything and waits for the engine to stop (before disposing the model). */
  async shutdown(): Promise<void> {
    this.disposed = true;
    for (const t of this.live) t.cancel('shutdown');
    await Promise.all([...this.generations]);
  }

  private cancelled(ticket: Ticket, stage: 'waiting' | 'generating' | 'done'): CompletionOutcome {
    const reason = ticket.reason ?? 'stale';
    if (ticket.speculative) {
      // Not a user request: nothing to count.
    } else if (reason === 'stale') {
      this.counters.staleVersion++;
    } else {
      this.counters.cancelled++;
      if (stage === 'waiting') this.counters.cancelledWaiting++;
      else this.counters.cancelledGenerating++;
    }
    return { kind: 'cancelled', reason, stage };
  }

  async complete(req: CompletionRequest): Promise<CompletionOutcome> {
    const t0 = this.now();
    this.counters.requests++;
    this.pendingRequests++;
    const ticket = new Ticket(req.uri, CompletionCache.stateKey(keyOf(req)));
    // Older requests are stale now. Prefetches are dealt with once it is clear this one needs the engine.
    for (const older of this.live) if (!older.speculative) older.cancel('superseded');
    this.live.add(ticket);
    req.onClientCancel?.(() => ticket.cancel('client'));
    try {
      if (this.disposed) ticket.cancel('shutdown');
      const outcome = await this.run(req, ticket, t0);
      if (outcome.kind === 'suggestion' || outcome.kind === 'empty') this.backendError = undefined;
      return outcome;
    } catch (e) {
      this.counters.errors++;
      if (e instanceof BackendError) {
        // Not the request's fault: say so in the status, answer nothing; the next request tries again.
        this.backendError = e.message;
        return { kind: 'error', message: e.message };
      }
      throw e;
    } finally {
      this.live.delete(ticket);
      ticket.finish();
      this.pendingRequests--;
      this.onChange();
    }
  }

  /** Answers from the cache, if it holds this state (exact, or typed into a shown suggestion). */
  private fromCache(req: CompletionRequest, t0: number): CompletionOutcome | undefined {
    const hit = this.cache.get(keyOf(req));
    if (!hit) return undefined;
    this.counters.cacheHits++;
    if (hit.prefetched) this.counters.prefetchHits++;
    this.counters.completed++;
    const totalMs = this.now() - t0;
    this.last = {
      totalMs, waitMs: 0, prefillMs: 0, decodeMs: 0, otherMs: totalMs, promptTokens: 0, reusedTokens: 0,
      evaluatedPromptTokens: 0, generatedTokens: 0, tokensPerSec: 0, stop: `cache_${hit.kind}`, fromCache: true,
    };
    this.prefetchAfter(req, hit.text);
    return { kind: 'suggestion', text: hit.text, timing: this.last };
  }

  /**
   * The user accepted the start of a shown suggestion (a word or a line); `req` is the document after it. The rest
   * of that suggestion becomes the exact cache entry of the new state, and the prefetch of accepting all of it keeps
   * running (or starts). False when the cache has no suggestion this acceptance belongs to.
   */
  partiallyAccepted(req: CompletionRequest): boolean {
    const hit = this.cache.get(keyOf(req));
    if (!hit) {
      // The whole suggestion accepted while its prefetch still runs: the next request waits for that prefetch.
      const stateKey = CompletionCache.stateKey(keyOf(req));
      const prefetching = [...this.live].some((t) => t.speculative && t.stateKey === stateKey && !t.cancelled);
      if (prefetching) this.partialAccepts++;
      return prefetching;
    }
    this.partialAccepts++;
    this.cache.put(keyOf(req), hit.text, hit.prefetched);
    this.prefetchAfter(req, hit.text);
    return true;
  }

  /** Partial accepts that matched a cached suggestion (see partiallyAccepted). */
  partialAccepts = 0;

  /** Computes and caches the suggestion for the document with `suggestion` accepted (see the file comment). */
  private prefetchAfter(req: CompletionRequest, suggestion: string): void {
    if (!this.settings.prefetch || this.disposed) return;
    const accepted: CompletionRequest = {
      uri: req.uri,
      languageId: req.languageId,
      text: req.text.slice(0, req.offset) + suggestion + req.text.slice(req.offset),
      offset: req.offset + suggestion.length,
      windowStart: req.windowStart,
      version: req.version,
      invoked: true,
      // Only cached, never shown as such: no document version applies.
      currentVersion: () => req.version,
    };
    const stateKey = CompletionCache.stateKey(keyOf(accepted));
    // Typing into a shown suggestion leads to the same accepted state each keystroke: one prefetch for it.
    for (const t of this.live) if (t.speculative && t.stateKey === stateKey && !t.cancelled) return;
    const ticket = new Ticket(req.uri, stateKey, true);
    this.live.add(ticket);
    void this.run(accepted, ticket, this.now())
      .catch(() => undefined) // a failed prefetch costs the user nothing; the real request will report
      .finally(() => {
        this.live.delete(ticket);
        ticket.finish();
        this.onChange();
      });
  }

  private async run(req: CompletionRequest, ticket: Ticket, t0: number): Promise<CompletionOutcome> {
    const ppContext = postprocessContext(req.text, req.offset, this.settings.stopSequences);
    const cacheKey = keyOf(req);
    const speculative = ticket.speculative;

    const delay = speculative ? 0 : this.debounce.next(this.now());
    if (speculative) {
      if (this.cache.get(cacheKey)) return { kind: 'cancelled', reason: 'superseded', stage: 'done' }; // known already
    } else {
      const cached = this.fromCache(req, t0);
      // An explicit trigger on a shown suggestion (VS Code's Alt+] asks again with Invoke) wants the alternatives too.
      if (cached) return req.invoked ? this.withAlternatives(cached, req, ticket, ppContext, t0) : cached;
      // This request needs the engine: a prefetch for exactly its state is awaited (its answer lands in the cache),
      // any other yields.
      let adopted: Ticket | undefined;
      for (const t of this.live) {
        if (!t.speculative) continue;
        if (t.stateKey === ticket.stateKey && !t.cancelled) adopted = t;
        else t.cancel('superseded');
      }
      if (adopted) {
        await Promise.race([adopted.finished, new Promise<void>((r) => ticket.onCancel(r))]);
        if (ticket.cancelled) return this.cancelled(ticket, 'waiting');
        const prefetched = this.fromCache(req, t0);
        if (prefetched) return prefetched;
      }
    }

    if (!req.invoked) await ticket.sleep(delay);
    if (ticket.cancelled) return this.cancelled(ticket, 'waiting');

    const gen = await this.generateOne(req, ticket, ppContext, undefined, this.settings.timeCapMs);
    const { result, stopBy, startedAt } = gen;
    const waitMs = (startedAt ?? this.now()) - t0;
    if (ticket.cancelled) return this.cancelled(ticket, startedAt === undefined ? 'waiting' : 'generating');
    if (req.currentVersion() !== req.version) {
      ticket.cancel('stale');
      return this.cancelled(ticket, 'done');
    }

    const pp = postprocess(result.text, ppContext);
    const prompt = result.prompt;
    const totalMs = this.now() - t0;
    const otherMs = Math.max(0, totalMs - waitMs - result.prefillMs - result.decodeMs);
    const decodeSteps = result.evaluatedTokens - (result.promptTokens - result.reusedTokens);
    const timing: CompletionTiming = {
      totalMs,
      waitMs,
      prefillMs: result.prefillMs,
      decodeMs: result.decodeMs,
      otherMs,
      promptTokens: result.promptTokens,
      reusedTokens: result.reusedTokens,
      evaluatedPromptTokens: result.promptTokens - result.reusedTokens,
      generatedTokens: result.generatedTokens,
      // The first token comes from the prefill's logits: decode time covers the forward passes after it.
      tokensPerSec: decodeSteps > 0 && result.decodeMs > 0 ? (decodeSteps * 1000) / result.decodeMs : 0,
      stop: stopBy ?? result.stopReason,
      fromCache: false,
    };
    if (pp.text.length === 0) {
      if (!speculative) {
        this.last = timing;
        this.counters.empty++;
      }
      return { kind: 'empty', reason: pp.dropped ?? 'empty', timing, prompt };
    }
    this.cache.put(cacheKey, pp.text, speculative);
    if (speculative) {
      this.counters.prefetched++;
      return { kind: 'suggestion', text: pp.text, timing, prompt };
    }
    this.last = timing;
    this.counters.completed++;
    const suggestion: CompletionOutcome = { kind: 'suggestion', text: pp.text, timing, prompt };
    const answer = req.invoked ? await this.withAlternatives(suggestion, req, ticket, ppContext, t0) : suggestion;
    if (answer.kind === 'suggestion') this.prefetchAfter(req, pp.text);
    return answer;
  }

  /** `outcome` (a suggestion) with its alternatives added; unchanged when there is nothing to add. */
  private async withAlternatives(
    outcome: CompletionOutcome, req: CompletionRequest, ticket: Ticket, ppContext: PostprocessContext, t0: number,
  ): Promise<CompletionOutcome> {
    if (outcome.kind !== 'suggestion' || (this.settings.alternatives ?? 1) < 2) return outcome;
    const alternatives = await this.alternativesTo(outcome.text, req, ticket, ppContext, t0);
    if (ticket.cancelled) return this.cancelled(ticket, 'generating');
    return alternatives.length > 1 ? { ...outcome, alternatives } : outcome;
  }

  /**
   * Up to `alternatives` different suggestions, `first` (the greedy one) first: seeded samples, post-processed,
   * duplicates dropped. Within the request's time cap; a cancel or an edit ends it with what was found.
   */
  private async alternativesTo(
    first: string, req: CompletionRequest, ticket: Ticket, ppContext: PostprocessContext, t0: number,
  ): Promise<string[]> {
    const wanted = this.settings.alternatives ?? 1;
    const found = [first];
    for (let i = 0; i < (wanted - 1) * ALT_TRIES_PER_CANDIDATE && found.length < wanted; i++) {
      const capMs = this.settings.timeCapMs - (this.now() - t0);
      if (capMs <= 0 || ticket.cancelled || req.currentVersion() !== req.version) break;
      const { result } = await this.generateOne(req, ticket, ppContext, { seed: ALT_SEED_BASE + i, ...ALT_SAMPLING }, capMs);
      if (ticket.cancelled) break;
      const text = postprocess(result.text, ppContext).text;
      if (text.length > 0 && !found.includes(text)) found.push(text);
    }
    return found;
  }

  /**
   * One generation through the backend, stopped as soon as post-processing has decided (or at the time cap, or when
   * the ticket is cancelled). Backend failures reject with BackendError.
   */
  private async generateOne(
    req: CompletionRequest, ticket: Ticket, ppContext: PostprocessContext, sampling: Sampling | undefined, capMs: number,
  ): Promise<{ result: BackendResult; stopBy?: 'postprocess' | 'time_cap'; startedAt?: number }> {
    let text = '';
    let stopBy: 'postprocess' | 'time_cap' | undefined;
    let startedAt: number | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const generation = this.backend.generate(
      {
        doc: req,
        maxTokens: this.settings.maxTokens,
        stopSequences: this.settings.stopSequences,
        maxPrefixTokens: this.settings.maxPrefixTokens,
        maxSuffixTokens: this.settings.maxSuffixTokens,
        snippetShare: this.settings.contextFromOpenFiles ? SNIPPET_SHARE : 0,
        sampling,
      },
      {
        onStart: () => {
          // Left the queue: the backend works for this request from here; the time cap counts from here.
          startedAt = this.now();
          this.activeGenerations++;
          this.onChange(); // the status bar shows "generating"
          timer = setTimeout(() => {
            stopBy ??= 'time_cap';
            generation.cancel();
          }, capMs);
        },
        onText: (chunk) => {
          if (stopBy || ticket.cancelled) return;
          text += chunk;
          // Stop as soon as post-processing has decided where the suggestion ends.
          if (postprocess(text, ppContext).final) {
            stopBy = 'postprocess';
            generation.cancel();
          }
        },
      },
    );
    const done = generation.result.finally(() => {
      clearTimeout(timer);
      if (startedAt !== undefined) this.activeGenerations--;
    });
    const settled = done.catch(() => undefined);
    this.generations.add(settled);
    void settled.then(() => this.generations.delete(settled));
    let cancelledAt: number | undefined;
    ticket.onCancel(() => {
      cancelledAt = this.now();
      generation.cancel();
    });
    const result = await done;
    // Engine work counts whoever asked for it.
    this.counters.evaluatedTokens += result.evaluatedTokens;
    if (cancelledAt !== undefined && startedAt !== undefined) {
      this.counters.maxCancelToStopMs = Math.max(this.counters.maxCancelToStopMs, this.now() - cancelledAt);
    }
    return { result, stopBy, startedAt };
  }
}
