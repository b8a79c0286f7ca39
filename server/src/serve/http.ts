/**
 * `mixq serve`'s HTTP side: the engine behind the OpenAI-compatible completions API, for editors and tools that speak
 * it (and for MixQ's own remote backend).
 *
 *   GET  /v1/models        the one model: { object: 'list', data: [{ id, object: 'model', owned_by: 'mixq' }] }
 *   POST /v1/completions   prompt (+ suffix: fill in the middle with the model's FIM template), max_tokens, stop,
 *                          temperature (0 = greedy), top_p, seed, stream (server-sent events), ignore_eos
 *   GET  /health           200 { status: 'ok', running, queued }
 *
 * Limits: bodies up to `maxBodyBytes` (else 413, also for a chunked body that grows past it); one generation at a
 * time in the engine's scheduler, at most `queueLimit` waiting behind it (else 429 with Retry-After); prompt +
 * max_tokens within the model's context (else 400). Every refusal is an OpenAI-style error body with the reason.
 * A client that disconnects cancels its generation (queued: dropped; running: stopped before the next token).
 *
 * Generation runs on the engine's native worker threads (../engine via ../completion/model): this event loop only
 * parses, queues and streams, so /v1/models, /health and refusals are answered while a completion runs.
 */
import * as http from 'node:http';

import { IncrementalDetokenizer } from '../detokenizer';
import type { EngineCompletionModel, ModelGeneration } from '../completion/model';
import { assemblePrompt } from '../completion/prompt';
import { TEMPLATES, type FimTemplate } from '../completion/templates';
import { DEFAULT_LIMITS, HttpError, parseCompletionsRequest, StopScanner, type CompletionsLimits, type CompletionsRequest } from './request';

export interface ServeOptions {
  /** Largest request body in bytes. */
  maxBodyBytes: number;
  /** Requests that may wait behind the running generation. */
  queueLimit: number;
  limits: CompletionsLimits;
  log: (line: string) => void;
}

export const DEFAULT_SERVE_OPTIONS: ServeOptions = {
  maxBodyBytes: 1 << 20,
  queueLimit: 4,
  limits: DEFAULT_LIMITS,
  log: () => undefined,
};

type FinishReason = 'stop' | 'length' | 'cancelled';

interface Completed {
  text: string;
  finish: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export class CompletionsServer {
  readonly http: http.Server;
  /** Requests accepted and not yet finished: the running one plus those queued behind it. */
  private inFlight = 0;
  private nextId = 1;
  private readonly stopIds: number[];

  constructor(
    private readonly model: EngineCompletionModel,
    /** The FIM layout for requests with a suffix (chosen once from the tokenizer, as the editor does). */
    private readonly fim: FimTemplate,
    private readonly options: ServeOptions = DEFAULT_SERVE_OPTIONS,
  ) {
    const ids = new Set<number>();
    for (const name of fim.stopTokens) {
      const id = model.markerId(name);
      if (id !== undefined) ids.add(id);
    }
    if (model.eosId !== undefined) ids.add(model.eosId);
    this.stopIds = [...ids];
    this.http = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
      this.route(req, res).catch((e: unknown) => this.fail(res, e));
    });
  }

  /** The model's id in requests and /v1/models. */
  get modelId(): string {
    return this.model.name;
  }

  private fail(res: http.ServerResponse, e: unknown): void {
    const err = e instanceof HttpError ? e : new HttpError(500, `internal error: ${(e as Error)?.message ?? String(e)}`);
    if (err.status >= 500) this.options.log(`error: ${err.message}`);
    if (res.headersSent) {
      // Streaming already: an error event, then the end.
      if (!res.writableEnded) res.end(`data: ${err.body()}\n\n`);
      return;
    }
    const headers: Record<string, string> = err.status === 429 ? { 'Retry-After': '1' } : {};
    if (err.status === 413) headers.Connection = 'close';
    sendJson(res, err.status, err.body(), headers);
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/';
    const routes: Record<string, string> = { '/v1/models': 'GET', '/health': 'GET', '/v1/completions': 'POST' };
    const method = routes[url];
    if (!method) throw new HttpError(404, `no route ${req.method} ${url}: this server answers POST /v1/completions, GET /v1/models and GET /health`);
    if (req.method !== method) {
      res.setHeader('Allow', method);
      throw new HttpError(405, `${url} takes ${method}, not ${req.method}`);
    }
    if (url === '/v1/models') {
      sendJson(res, 200, { object: 'list', data: [{ id: this.modelId, object: 'model', created: 0, owned_by: 'mixq' }] });
    } else if (url === '/health') {
      sendJson(res, 200, { status: 'ok', running: Math.min(1, this.inFlight), queued: Math.max(0, this.inFlight - 1) });
    } else {
      await this.completions(req, res);
    }
  }

  /**
   * The body as JSON, within maxBodyBytes (413 beyond it, checked on Content-Length and on the bytes received). Read
   * as JSON whatever Content-Type says (`curl -d` sends form-urlencoded).
   */
  private readBody(req: http.IncomingMessage): Promise<unknown> {
    const max = this.options.maxBodyBytes;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      req.resume(); // discard; the connection closes after the answer
      return Promise.reject(new HttpError(413, `the body is ${declared} bytes, more than the limit of ${max}`));
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on('data', (chunk: Buffer) => {
        if (over) return;
        size += chunk.length;
        if (size > max) {
          over = true;
          reject(new HttpError(413, `the body is more than the limit of ${max} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      req.on('error', reject);
      req.on('end', () => {
        if (over) return;
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(new HttpError(400, `the body is not valid JSON: ${(e as Error).message}`));
        }
      });
    });
  }

  private async completions(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = parseCompletionsRequest(await this.readBody(req), this.options.limits);
    if (body.model !== undefined && body.model !== '' && body.model !== this.modelId) {
      throw new HttpError(404, `model "${body.model}" is not served here; this server has "${this.modelId}"`, 'model');
    }
    const template = body.suffix !== undefined ? this.fim : TEMPLATES['prefix-only'];
    const prompt = assemblePrompt(this.model, template, this.model.encode(body.prompt), body.suffix !== undefined ? this.model.encode(body.suffix) : []);
    const context = this.model.info.contextLength;
    if (prompt.length + body.maxTokens > context) {
      throw new HttpError(400, `the prompt of ${prompt.length} tokens plus max_tokens ${body.maxTokens} exceeds the context of ${context} tokens`, 'prompt');
    }
    if (this.inFlight > this.options.queueLimit) {
      throw new HttpError(429, `busy: one generation running and ${this.inFlight - 1} waiting (the queue limit is ${this.options.queueLimit}); retry later`);
    }
    this.inFlight++;
    try {
      await this.generate(res, body, prompt);
    } finally {
      this.inFlight--;
    }
  }

  private generate(res: http.ServerResponse, body: CompletionsRequest, prompt: number[]): Promise<void> {
    const id = `cmpl-mixq-${this.nextId++}`;
    const created = Math.floor(Date.now() / 1000);
    const chunk = (text: string, finish: FinishReason | null, usage?: object): string =>
      `data: ${JSON.stringify({ id, object: 'text_completion', created, model: this.modelId, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }], ...(usage ? { usage } : {}) })}\n\n`;
    const stopIds = body.ignoreEos ? [] : this.stopIds;
    const detok = new IncrementalDetokenizer(this.model);
    const scanner = new StopScanner(body.stop);
    let text = '';
    let generated = 0;
    let stoppedBySequence = false;
    const emit = (piece: string): void => {
      if (!piece) return;
      text += piece;
      if (body.stream && !res.writableEnded) res.write(chunk(piece, null));
    };
    const greedy = body.temperature === 0;
    let generation: ModelGeneration | undefined;
    generation = this.model.generate(
      {
        prompt, maxTokens: body.maxTokens, stopIds, ignoreEos: body.ignoreEos, greedy,
        ...(greedy ? {} : { temperature: body.temperature, topP: body.topP, seed: body.seed ?? Math.floor(Math.random() * 2 ** 31) }),
      },
      {
        onStart: () => {
          // Headers go out when the engine takes the request: until then a client may give up and be dropped unseen.
          if (body.stream && !res.headersSent) {
            res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
          }
        },
        onToken: (token) => {
          if (stoppedBySequence || stopIds.includes(token)) return;
          generated++;
          const piece = detok.push(token);
          if (!piece) return;
          emit(scanner.push(piece));
          if (scanner.stopped) {
            stoppedBySequence = true;
            generation?.cancel();
          }
        },
      },
    );
    let disconnected = false;
    res.on('close', () => {
      if (res.writableFinished) return;
      disconnected = true;
      generation?.cancel();
    });
    return generation.result.then((r) => {
      if (!stoppedBySequence) {
        emit(scanner.push(detok.flush()));
        if (!scanner.stopped) emit(scanner.flush());
      }
      if (disconnected) {
        this.options.log(`${id}: the client disconnected; stopped after ${generated} tokens`);
        return;
      }
      const finish: FinishReason = stoppedBySequence || scanner.stopped ? 'stop'
        : r.stopReason === 'max_tokens' || r.stopReason === 'context_full' ? 'length' : r.stopReason === 'cancelled' ? 'cancelled' : 'stop';
      const done: Completed = { text, finish, promptTokens: r.promptTokens, completionTokens: generated };
      this.finish(res, id, created, body, done, chunk);
    });
  }

  private finish(res: http.ServerResponse, id: string, created: number, body: CompletionsRequest, done: Completed,
    chunk: (text: string, finish: FinishReason | null, usage?: object) => string): void {
    const usage = { prompt_tokens: done.promptTokens, completion_tokens: done.completionTokens, total_tokens: done.promptTokens + done.completionTokens };
    if (body.stream) {
      if (!res.headersSent) res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      res.end(chunk('', done.finish, usage) + 'data: [DONE]\n\n');
      return;
    }
    sendJson(res, 200, {
      id, object: 'text_completion', created, model: this.modelId,
      choices: [{ index: 0, text: done.text, logprobs: null, finish_reason: done.finish }], usage,
    });
  }

  /** Starts listening; resolves with the bound address. */
  listen(host: string, port: number): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        const a = this.http.address();
        if (!a || typeof a === 'string') return reject(new Error('no address'));
        resolve({ address: a.address, port: a.port });
      });
    });
  }

  /** Stops accepting, cancels what runs (the caller disposes the engine after). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }
}
