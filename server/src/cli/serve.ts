/**
 * `mixq serve`: the engine behind an OpenAI-compatible HTTP API (../serve/http), so that other editors and tools — and
 * MixQ's own `mixq.backend: openai` — can use it.
 *
 * Binds 127.0.0.1 unless --host says otherwise; a non-loopback --host is accepted (it was asked for) with a warning
 * on stderr, since the API has no authentication. Prints one line `listening on http://HOST:PORT (model NAME)` to
 * stdout once it accepts connections (with --port 0 the port is the system's choice). SIGINT/SIGTERM close the
 * listener, stop the running generation and exit 0.
 */
import * as net from 'node:net';

import { EngineCompletionModel } from '../completion/model';
import { chooseTemplate } from '../completion/templates';
import { Engine } from '../engine';
import { CompletionsServer, DEFAULT_SERVE_OPTIONS } from '../serve/http';
import { DEFAULT_LIMITS } from '../serve/request';
import { parseFlags, UsageError } from './args';
import type { CliIo, Command } from './command';
import { engineFlags } from './common';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 8090;

const flags = {
  model: { type: 'string', help: 'model folder (config.json, *.safetensors, tokenizer.json)', valueName: 'dir', required: true },
  host: { type: 'string', help: `address to bind (default ${DEFAULT_HOST}; anything else is reachable from other machines, without authentication)`, valueName: 'addr' },
  port: { type: 'int', help: `TCP port (default ${DEFAULT_PORT}; 0: any free port)`, min: 0, max: 65535 },
  queue: { type: 'int', help: `requests that may wait behind the running one; more get 429 (default ${DEFAULT_SERVE_OPTIONS.queueLimit})`, min: 0, max: 1024 },
  maxTokens: { type: 'int', help: `largest max_tokens a request may ask for (default ${DEFAULT_LIMITS.maxTokens})`, min: 1, max: 1 << 20 },
  maxBodyBytes: { type: 'int', help: `largest request body; larger get 413 (default ${DEFAULT_SERVE_OPTIONS.maxBodyBytes})`, min: 1024, max: 1 << 30 },
  ...engineFlags,
} as const;

/** True for an address that only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return net.isIPv4(h.slice(7)) && h.slice(7).startsWith('127.');
  return false;
}

/** The address to bind: loopback unless `host` was given; a warning when the given one is not loopback. */
export function bindAddress(host: string | undefined): { host: string; warning?: string } {
  if (host === undefined) return { host: DEFAULT_HOST };
  if (host.trim() === '') throw new UsageError('--host: empty address');
  if (isLoopback(host)) return { host };
  return {
    host,
    warning: `warning: binding ${host}, which other machines can reach: anyone who can connect can use this model (the API has no authentication); bind ${DEFAULT_HOST} and use an SSH tunnel or a reverse proxy with authentication instead`,
  };
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'serve the model over an OpenAI-compatible HTTP API (/v1/completions with FIM suffix and streaming, /v1/models)',
  usage: `--model DIR [--host ${DEFAULT_HOST}] [--port ${DEFAULT_PORT}] [--queue N] [--max-tokens N]`,
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const f = parseFlags(argv, flags);
    const bind = bindAddress(f.host);
    if (bind.warning) io.stderr.write(`mixq serve: ${bind.warning}\n`);
    const engine = await Engine.load(f.model!, { device: f.device, threads: f.threads, contextLength: f.contextLength });
    const model = new EngineCompletionModel(engine);
    const choice = chooseTemplate('auto', model.vocab);
    const server = new CompletionsServer(model, choice.template, {
      maxBodyBytes: f.maxBodyBytes ?? DEFAULT_SERVE_OPTIONS.maxBodyBytes,
      queueLimit: f.queue ?? DEFAULT_SERVE_OPTIONS.queueLimit,
      limits: { ...DEFAULT_LIMITS, maxTokens: f.maxTokens ?? DEFAULT_LIMITS.maxTokens },
      log: (line) => io.stderr.write(`mixq serve: ${line}\n`),
    });
    let bound: { address: string; port: number };
    try {
      bound = await server.listen(bind.host, f.port ?? DEFAULT_PORT);
    } catch (e) {
      await engine.dispose();
      throw new Error(`cannot listen on ${bind.host}:${f.port ?? DEFAULT_PORT}: ${(e as Error).message}`);
    }
    const shown = bound.address.includes(':') ? `[${bound.address}]` : bound.address;
    io.stdout.write(`listening on http://${shown}:${bound.port} (model ${server.modelId}, ${engine.info.device}, FIM template ${choice.template.id})\n`);
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => resolve(s));
    });
    io.stderr.write(`mixq serve: ${signal}: shutting down\n`);
    engine.cancelAll();
    await server.close();
    await engine.dispose();
    return 0;
  },
};
