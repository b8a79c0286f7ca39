/**
 * The remote backend: an OpenAI-compatible `/v1/completions` server (vLLM, llama.cpp's server, Ollama, `mixq serve`).
 *
 * Request: POST {endpoint}/v1/completions with { model, prompt: the text before the cursor (snippets of other files
 * in front, as comments), suffix: the text after it (the server lays out its own FIM prompt), max_tokens, stop,
 * temperature 0 (greedy) or the alternatives' seeded sampling, stream: true }, `Authorization: Bearer KEY` when an
 * API key is set. The answer is a server-sent event stream of `data: {choices: [{text, finish_reason}]}` lines ending
 * with `data: [DONE]`; cancel() aborts the request, which closes the connection (the server stops generating).
 *
 * With `mixq.fimTemplate` set to a template (not `auto`), MixQ lays out the FIM prompt itself, as text with the
 * template's marker strings, and sends no `suffix`: for servers that refuse `suffix` (vLLM answers 400 "suffix is not
 * currently supported") but tokenize special-token strings in the prompt.
 *
 * Budgets are in characters here (the tokenizer is the server's): CHARS_PER_TOKEN per token of maxPrefixTokens /
 * maxSuffixTokens, whole lines. Failures (unreachable, an HTTP error, an error event, a stream cut off before
 * [DONE]) reject with a BackendError whose message names the endpoint and the cause — never the API key.
 *
 * Only Node's built-in fetch is used.
 */
import { BackendError, type BackendGeneration, type BackendGenerationOptions, type BackendRequest, type BackendResult, type CompletionBackend } from './backend';
import { formatSnippets, type ContextProvider } from './context';
import { TEMPLATES, type FimTemplate } from './templates';
import type { FimTemplateSetting } from '#protocol';

/** Characters per token for the text budgets (code averages 3–4). */
export const CHARS_PER_TOKEN = 4;
/** How long the server may take to start answering (it may be busy with others' requests), ms. */
const RESPONSE_TIMEOUT_MS = 30_000;
/** Most bytes of an error body quoted in a message. */
const ERROR_BODY_CHARS = 300;

/** The base URL of `endpoint` (no trailing `/` or `/v1`); throws BackendError when it is not an http(s) URL. */
export function endpointBase(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint.trim());
  } catch {
    throw new BackendError(`mixq.endpoint ${JSON.stringify(endpoint)} is not a URL (e.g. http://127.0.0.1:8090)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new BackendError(`mixq.endpoint ${JSON.stringify(endpoint)} must be an http:// or https:// URL`);
  }
  if (url.username || url.password) throw new BackendError('mixq.endpoint must not carry credentials: use "MixQ: Set API Key…"');
  return url.origin + url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
}

/** Splits a server-sent event stream into the `data` of each event (comments and other fields skipped). */
export class SseParser {
  private buffer = '';
  private data: string[] = [];

  /** Feeds decoded text; returns the data of the events it completed. */
  push(text: string): string[] {
    this.buffer += text;
    const out: string[] = [];
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/);
      if (nl < 0) break;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + (this.buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (this.data.length > 0) out.push(this.data.join('\n'));
        this.data = [];
      } else if (line.startsWith('data:')) {
        this.data.push(line.slice(line[5] === ' ' ? 6 : 5));
      }
    }
    return out;
  }
}

/** Lines of `text` from its end, whole lines, within `maxChars` (the cursor's line always). */
export function tailLines(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  const cursorLine = text.lastIndexOf('\n') + 1;
  if (text.length - cursorLine >= maxChars) return text.slice(text.length - maxChars);
  const start = text.indexOf('\n', text.length - maxChars - 1) + 1;
  return text.slice(Math.min(start, cursorLine));
}

/** Lines of `text` from its start, whole lines, within `maxChars`. */
export function headLines(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  const end = text.lastIndexOf('\n', maxChars);
  return end > 0 ? text.slice(0, end + 1) : text.slice(0, maxChars);
}

interface CompletionChunk {
  choices?: Array<{ text?: unknown; finish_reason?: unknown }>;
  usage?: { prompt_tokens?: unknown; completion_tokens?: unknown };
  error?: { message?: unknown } | string;
}

/** The body of an OpenAI-style error (`{"error": {"message": …}}`), shortened; else the body's start. */
function errorReason(body: string): string {
  try {
    const j = JSON.parse(body) as CompletionChunk & { detail?: unknown; message?: unknown };
    const e = j.error;
    const msg = typeof e === 'string' ? e : typeof e?.message === 'string' ? e.message : typeof j.detail === 'string' ? j.detail : j.message;
    if (typeof msg === 'string') return msg.slice(0, ERROR_BODY_CHARS);
  } catch {
    // not JSON
  }
  return body.trim().slice(0, ERROR_BODY_CHARS);
}

function causeOf(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  return err.cause?.code ?? err.cause?.message ?? err.message ?? String(e);
}

/** The FIM prompt as text: markers as their strings, BOS left to the server's tokenizer. */
export function fimPromptText(template: FimTemplate, prefix: string, suffix: string): string {
  return template.segments.map((seg) => {
    switch (seg.kind) {
      case 'bos': return '';
      case 'special': return seg.token;
      case 'literal': return seg.text;
      case 'prefix': return prefix;
      case 'suffix': return suffix;
    }
  }).join('');
}

export class RemoteBackend implements CompletionBackend {
  readonly kind = 'openai';
  readonly templateId: string;
  readonly templateReason: string;
  readonly base: string;
  /** The layout MixQ applies itself (mixq.fimTemplate not `auto`); undefined: the server's, through `suffix`. */
  private readonly template: FimTemplate | undefined;
  /** The model named in requests: the setting, else the first of /v1/models (asked once it is needed). */
  private model: string | undefined;

  constructor(
    endpoint: string,
    remoteModel: string,
    private readonly apiKey: () => string,
    private readonly providers: readonly ContextProvider[] = [],
    fimTemplate: FimTemplateSetting = 'auto',
  ) {
    this.base = endpointBase(endpoint);
    this.model = remoteModel.trim() || undefined;
    this.template = fimTemplate === 'auto' ? undefined : TEMPLATES[fimTemplate];
    this.templateId = this.template ? `${this.template.id} (as text)` : 'server';
    this.templateReason = this.template
      ? `mixq.fimTemplate ${this.template.id}: the prompt is laid out here, as text, without suffix`
      : 'the remote server lays out the prompt (prompt + suffix)';
  }

  get modelName(): string | undefined {
    return this.model;
  }

  private headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = { Accept: json ? 'application/json' : 'text/event-stream' };
    if (json) h['Content-Type'] = 'application/json';
    const key = this.apiKey();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }

  /** The model to name: the setting, else the first of GET /v1/models. */
  private async resolveModel(signal: AbortSignal): Promise<string> {
    if (this.model) return this.model;
    const url = `${this.base}/v1/models`;
    let res: Response;
    try {
      res = await fetch(url, { headers: this.headers(false), signal });
    } catch (e) {
      if (signal.aborted) throw e;
      throw new BackendError(`cannot reach ${this.base}: ${causeOf(e)}`);
    }
    const body = await res.text();
    if (!res.ok) throw new BackendError(`${url}: HTTP ${res.status} ${errorReason(body)}`.trim());
    try {
      const id = (JSON.parse(body) as { data?: Array<{ id?: unknown }> }).data?.[0]?.id;
      if (typeof id === 'string' && id) return (this.model = id);
    } catch {
      // below
    }
    throw new BackendError(`${url} lists no model: set mixq.remoteModel`);
  }

  /** The JSON body of the /v1/completions request for `req`. */
  body(req: BackendRequest, model: string): Record<string, unknown> {
    const before = req.doc.text.slice(0, req.doc.offset);
    const after = req.doc.text.slice(req.doc.offset);
    const prefixChars = req.maxPrefixTokens * CHARS_PER_TOKEN;
    let snippets = '';
    if (req.snippetShare > 0 && this.providers.length > 0) {
      const budget = Math.floor(prefixChars * req.snippetShare);
      const found = this.providers.flatMap((p) => p.snippets(req.doc, budget)).sort((a, b) => b.score - a.score);
      while (found.length > 0 && (snippets = formatSnippets(found, req.doc.languageId)).length > budget) found.pop();
      if (found.length === 0) snippets = '';
    }
    const prefix = snippets + tailLines(before, prefixChars - snippets.length);
    const suffix = headLines(after, req.maxSuffixTokens * CHARS_PER_TOKEN);
    const body: Record<string, unknown> = {
      model,
      ...(this.template ? { prompt: fimPromptText(this.template, prefix, suffix) } : { prompt: prefix, suffix }),
      max_tokens: req.maxTokens,
      stream: true,
      temperature: req.sampling ? req.sampling.temperature : 0,
    };
    if (req.sampling) {
      body.seed = req.sampling.seed;
      body.top_p = req.sampling.topP;
    }
    if (req.stopSequences.length > 0) body.stop = [...req.stopSequences];
    return body;
  }

  generate(req: BackendRequest, options: BackendGenerationOptions): BackendGeneration {
    const controller = new AbortController();
    let cancelled = false;
    const cancelledResult = (text: string, generated: number): BackendResult => ({
      text, stopReason: 'cancelled', promptTokens: 0, reusedTokens: 0, evaluatedTokens: 0, generatedTokens: generated, prefillMs: 0, decodeMs: 0,
    });
    const run = async (): Promise<BackendResult> => {
      const t0 = performance.now();
      const timeout = setTimeout(() => controller.abort(new BackendError(`${this.base} did not answer within ${RESPONSE_TIMEOUT_MS / 1000} s`)), RESPONSE_TIMEOUT_MS);
      let res: Response;
      try {
        const model = await this.resolveModel(controller.signal);
        res = await fetch(`${this.base}/v1/completions`, {
          method: 'POST', headers: this.headers(true), body: JSON.stringify(this.body(req, model)), signal: controller.signal,
        });
      } catch (e) {
        if (cancelled) return cancelledResult('', 0);
        if (e instanceof BackendError) throw e;
        if (controller.signal.reason instanceof BackendError) throw controller.signal.reason;
        throw new BackendError(`cannot reach ${this.base}: ${causeOf(e)}`);
      } finally {
        clearTimeout(timeout);
      }
      if (!res.ok || !res.body) {
        const reason = errorReason(await res.text().catch(() => ''));
        const hint = res.status === 400 && /suffix/i.test(reason) && !this.template
          ? ' (this server does not take a suffix: set mixq.fimTemplate to the model\'s FIM layout, and MixQ sends the prompt laid out as text)'
          : '';
        throw new BackendError(`${this.base}/v1/completions: HTTP ${res.status} ${reason}`.trim() + hint);
      }
      options.onStart?.();
      let tFirst: number | undefined;
      let text = '';
      let chunks = 0;
      let finish: string | undefined;
      let usage: CompletionChunk['usage'];
      let done = false;
      const sse = new SseParser();
      const decoder = new TextDecoder();
      const reader = res.body.getReader();
      try {
        while (!done) {
          let read: Awaited<ReturnType<typeof reader.read>>;
          try {
            read = await reader.read();
          } catch (e) {
            if (cancelled) break;
            throw new BackendError(`${this.base}: the stream broke off (${causeOf(e)}) after ${text.length} characters`);
          }
          if (read.done) break;
          for (const data of sse.push(decoder.decode(read.value, { stream: true }))) {
            if (data.trim() === '[DONE]') {
              done = true;
              break;
            }
            let event: CompletionChunk;
            try {
              event = JSON.parse(data) as CompletionChunk;
            } catch {
              throw new BackendError(`${this.base}: the stream sent an event that is not JSON: ${data.slice(0, 80)}`);
            }
            if (event.error) throw new BackendError(`${this.base}: ${errorReason(JSON.stringify(event))}`);
            const choice = event.choices?.[0];
            if (typeof choice?.text === 'string' && choice.text && !cancelled) {
              tFirst ??= performance.now();
              text += choice.text;
              chunks++;
              options.onText?.(choice.text);
            }
            if (typeof choice?.finish_reason === 'string') finish = choice.finish_reason;
            if (event.usage) usage = event.usage;
          }
        }
      } finally {
        if (!done) await reader.cancel().catch(() => undefined);
      }
      if (cancelled) return cancelledResult(text, chunks);
      if (!done) throw new BackendError(`${this.base}: the connection closed before the end of the stream (after ${text.length} characters)`);
      const tEnd = performance.now();
      const promptTokens = typeof usage?.prompt_tokens === 'number' ? usage.prompt_tokens : 0;
      const generated = typeof usage?.completion_tokens === 'number' ? usage.completion_tokens : chunks;
      return {
        text,
        stopReason: finish === 'length' ? 'max_tokens' : finish === 'stop' ? 'stop' : (finish ?? 'eos'),
        promptTokens,
        reusedTokens: 0,
        evaluatedTokens: 0,
        generatedTokens: generated,
        // Time to the first text (the server's queue and prefill, and the network), then the rest.
        prefillMs: (tFirst ?? tEnd) - t0,
        decodeMs: tEnd - (tFirst ?? tEnd),
      };
    };
    return {
      result: run(),
      cancel: () => {
        cancelled = true;
        controller.abort();
      },
    };
  }
}
