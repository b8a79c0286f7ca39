/**
 * `POST /v1/completions` request bodies as `mixq serve` accepts them: the OpenAI completions fields MixQ implements,
 * each checked, with a reason naming the field for anything else (answered 400). Fields it does not know are
 * ignored, as OpenAI-compatible servers do; fields whose meaning it cannot honour (n > 1, echo, logprobs, best_of
 * > 1) are refused rather than silently answered differently.
 */

export interface CompletionsLimits {
  /** Largest max_tokens a request may ask for. */
  maxTokens: number;
  /** Most stop sequences, and the longest one in characters. */
  maxStops: number;
  maxStopChars: number;
}

export const DEFAULT_LIMITS: CompletionsLimits = { maxTokens: 1024, maxStops: 16, maxStopChars: 256 };

/** OpenAI's default when a request names no max_tokens. */
export const DEFAULT_MAX_TOKENS = 16;

export interface CompletionsRequest {
  model?: string;
  prompt: string;
  /** The text after the insertion point: present = fill in the middle. */
  suffix?: string;
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  /** vLLM's extension: keep generating past EOS (and the template's stop tokens) up to max_tokens. */
  ignoreEos: boolean;
}

/** An answer with an HTTP status and a reason (OpenAI's error shape: `{"error": {message, type, param, code}}`). */
export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly param?: string) {
    super(message);
  }
  get type(): string {
    if (this.status === 429) return 'rate_limit_error';
    if (this.status === 404) return 'not_found_error';
    if (this.status >= 500) return 'server_error';
    return 'invalid_request_error';
  }
  body(): string {
    return JSON.stringify({ error: { message: this.message, type: this.type, param: this.param ?? null, code: this.status } });
  }
}

const bad = (param: string, message: string): never => {
  throw new HttpError(400, `${param} ${message}`, param);
};

function optionalNumber(body: Record<string, unknown>, key: string, min: number, max: number, fallback: number, integer = false): number {
  const v = body[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) bad(key, `must be a number, got ${JSON.stringify(v)}`);
  if (integer && !Number.isInteger(v)) bad(key, `must be an integer, got ${v}`);
  if ((v as number) < min || (v as number) > max) bad(key, `must be from ${min} to ${max}, got ${v}`);
  return v as number;
}

/** The prompt: a string, or an array of exactly one string (token-id prompts are not accepted). */
function promptText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === 'string') return v[0];
  if (Array.isArray(v) && v.length > 1 && v.every((p) => typeof p === 'string')) bad('prompt', `holds ${v.length} prompts; send one per request`);
  if (v === undefined) bad('prompt', 'is missing');
  return bad('prompt', 'must be a string (token-id prompts are not supported)');
}

function stopList(v: unknown, limits: CompletionsLimits): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) return bad('stop', 'must be a string or an array of strings');
  if (list.length > limits.maxStops) bad('stop', `has ${list.length} sequences, at most ${limits.maxStops}`);
  for (const s of list as string[]) {
    if (s.length === 0) bad('stop', 'has an empty sequence');
    if (s.length > limits.maxStopChars) bad('stop', `has a sequence of ${s.length} characters, at most ${limits.maxStopChars}`);
  }
  return list as string[];
}

/** Checks a parsed JSON body; throws HttpError(400) naming the first bad field. */
export function parseCompletionsRequest(body: unknown, limits: CompletionsLimits = DEFAULT_LIMITS): CompletionsRequest {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object');
  const b = body as Record<string, unknown>;
  if (b.model !== undefined && typeof b.model !== 'string') bad('model', 'must be a string');
  const prompt = promptText(b.prompt);
  if (b.suffix !== undefined && b.suffix !== null && typeof b.suffix !== 'string') bad('suffix', 'must be a string');
  if (b.stream !== undefined && typeof b.stream !== 'boolean') bad('stream', 'must be true or false');
  if (b.ignore_eos !== undefined && typeof b.ignore_eos !== 'boolean') bad('ignore_eos', 'must be true or false');
  if (b.n !== undefined && b.n !== 1) bad('n', 'must be 1 (one completion per request)');
  if (b.best_of !== undefined && b.best_of !== 1 && b.best_of !== null) bad('best_of', 'is not supported');
  if (b.echo === true) bad('echo', 'is not supported');
  if (b.logprobs !== undefined && b.logprobs !== null && b.logprobs !== 0) bad('logprobs', 'is not supported');
  return {
    model: b.model as string | undefined,
    prompt,
    suffix: typeof b.suffix === 'string' ? b.suffix : undefined,
    maxTokens: optionalNumber(b, 'max_tokens', 1, limits.maxTokens, Math.min(DEFAULT_MAX_TOKENS, limits.maxTokens), true),
    temperature: optionalNumber(b, 'temperature', 0, 2, 1),
    topP: optionalNumber(b, 'top_p', Number.MIN_VALUE, 1, 1),
    seed: b.seed === undefined || b.seed === null ? undefined : optionalNumber(b, 'seed', 0, 2 ** 32 - 1, 0, true),
    stop: stopList(b.stop, limits),
    stream: b.stream === true,
    ignoreEos: b.ignore_eos === true,
  };
}

/**
 * Cuts streamed text at the first stop sequence. Text that could still be the start of a stop sequence is held back
 * until it cannot, so nothing after a stop is ever sent.
 */
export class StopScanner {
  private pending = '';
  private readonly longest: number;
  stopped = false;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Appends `chunk`; returns the text that is safe to send now. After a stop, `stopped` is true and nothing more comes. */
  push(chunk: string): string {
    if (this.stopped) return '';
    this.pending += chunk;
    let at = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.stopped = true;
      const out = this.pending.slice(0, at);
      this.pending = '';
      return out;
    }
    const keep = Math.max(0, Math.min(this.pending.length, this.longest - 1));
    const out = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return out;
  }

  /** The held-back rest once generation has ended without a stop. */
  flush(): string {
    const out = this.stopped ? '' : this.pending;
    this.pending = '';
    return out;
  }
}
