/**
 * The MixQ language server: answers LSP 3.18 `textDocument/inlineCompletion` with the local model, plus the custom
 * `mixq/*` messages of #protocol (protocol/src). Started by the VS Code client over IPC, or by tests over stdio
 * (`node out/server/server.js --stdio`).
 *
 * The model runs in the native addon's worker threads; this process's event loop only routes messages, so
 * `mixq/status` and document sync are answered while a completion generates.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  createConnection,
  ErrorCodes,
  InlineCompletionTriggerKind,
  LSPErrorCodes,
  ProposedFeatures,
  ResponseError,
  TextDocuments,
  TextDocumentSyncKind,
  type Connection,
  type InitializeResult,
  type InlineCompletionList,
  type Position,
} from 'vscode-languageserver/node';
import { TextDocument } from 'vscode-languageserver-textdocument';

import { BackendError } from './completion/backend';
import { combinedSources, OpenFilesContextProvider, RecentDocuments } from './completion/context';
import { openCompletionModel, type CompletionModel } from './completion/model';
import { RemoteBackend } from './completion/remote';
import { CompletionService, zeroCounters, type ServiceSettings } from './completion/service';
import { chooseTemplate } from './completion/templates';
import { documentWindow } from './completion/window';
import type { EngineLoadOptions } from './engine';
import {
  ApiKeyNotification,
  type ApiKeyParams,
  ConfigureNotification,
  defaultServerSettings,
  LoadModelRequest,
  ResetCountersRequest,
  SETTING_RANGES,
  StatusChangedNotification,
  StatusRequest,
  type InitializationOptions,
  type LoadModelParams,
  type LoadModelResult,
  type ServerSettings,
  type ServerState,
  type ServerStatus,
  PartialAcceptNotification,
  type PartialAcceptParams,
  ProfileEnableRequest,
  type ProfileEnableParams,
  ProfileModelRequest,
  type ProfileModelParams,
  type ProfileModelResult,
  ProfileProgressNotification,
  ProfileRequest,
  ProfileResetRequest,
} from '#protocol';
import { quantizeCapabilities, registerQuantizeFeatures } from './jobs/register';
import { ProfileHost } from './profiling';

/** Values a setting may take beyond its type (user settings are untrusted; package.json's enums are advisory). */
const SETTING_VALUES: Partial<Record<keyof ServerSettings, (value: unknown) => boolean>> = {
  device: (v) => v === 'auto' || v === 'cpu' || v === 'cuda',
  placement: (v) => v === 'layer' || v === 'expert',
  gpus: (v) => (v as unknown[]).every((g) => Number.isInteger(g) && (g as number) >= 0),
  devices: (v) => (v as unknown[]).every((d) => typeof d === 'string' && /^(cpu|cuda):\d+$/.test(d)),
  stopSequences: (v) => (v as unknown[]).every((s) => typeof s === 'string'),
  backend: (v) => v === 'local' || v === 'openai',
};

/** Why `value` is not acceptable for `key`, or undefined when it is. */
export function settingProblem(key: keyof ServerSettings, value: unknown): string | undefined {
  const expected = defaultServerSettings[key];
  if (!(Array.isArray(expected) ? Array.isArray(value) : typeof value === typeof expected)) {
    return `must be ${Array.isArray(expected) ? 'an array' : `a ${typeof expected}`}, got ${JSON.stringify(value)}`;
  }
  const range = SETTING_RANGES[key];
  if (range && (!Number.isInteger(value) || (value as number) < range.min || (value as number) > range.max)) {
    return `must be an integer from ${range.min} to ${range.max}, got ${JSON.stringify(value)}`;
  }
  if (SETTING_VALUES[key] && !SETTING_VALUES[key]!(value)) return `has an invalid value ${JSON.stringify(value)}`;
  return undefined;
}

/**
 * Merges partial settings over the defaults, ignoring values of the wrong type or out of range (user settings are
 * untrusted); each ignored value is reported through `rejected` ("threads must be an integer from 0 to 256, …").
 */
export function normalizeSettings(
  base: ServerSettings,
  patch: Partial<ServerSettings> | undefined,
  rejected?: (problem: string) => void,
): ServerSettings {
  const out: ServerSettings = { ...base };
  if (!patch || typeof patch !== 'object') return out;
  for (const key of Object.keys(defaultServerSettings) as Array<keyof ServerSettings>) {
    const value = patch[key];
    if (value === undefined || value === null) continue;
    const problem = settingProblem(key, value);
    if (problem) {
      rejected?.(`setting ${key} ${problem}; keeping ${JSON.stringify(out[key])}`);
      continue;
    }
    (out as unknown as Record<string, unknown>)[key] = value;
  }
  return out;
}

/**
 * mixq/loadModel parameters, checked before anything is loaded: a request that is not what the protocol declares is
 * answered with an InvalidParams error, never guessed at (`{"modelPath": 5}` is not a model, `""` is not the
 * server's working directory).
 */
export function checkLoadModelParams(params: unknown): LoadModelParams {
  const invalid = (msg: string): never => {
    throw new ResponseError(ErrorCodes.InvalidParams, `mixq/loadModel: ${msg}`);
  };
  if (!params || typeof params !== 'object' || Array.isArray(params)) invalid('params must be an object');
  const p = params as Record<string, unknown>;
  if (typeof p.modelPath !== 'string') invalid(`modelPath must be a string, got ${JSON.stringify(p.modelPath) ?? 'undefined'}`);
  if ((p.modelPath as string).trim() === '') invalid('modelPath is empty');
  if ((p.modelPath as string).includes('\0')) invalid('modelPath contains a NUL character');
  for (const key of ['device', 'gpus', 'devices', 'placement'] as const) {
    if (p[key] === undefined) continue;
    const problem = settingProblem(key, p[key]);
    if (problem) invalid(`${key} ${problem}`);
  }
  return p as unknown as LoadModelParams;
}

/** The engine's load options from the settings: devices (else gpus, else device) and the placement mode. */
export function loadOptions(s: ServerSettings): EngineLoadOptions {
  return {
    device: s.device,
    gpus: s.gpus.length > 0 ? s.gpus : undefined,
    devices: s.devices.length > 0 ? s.devices : undefined,
    placement: s.placement,
    threads: s.threads,
    contextLength: s.contextLength,
  };
}

function serviceSettings(s: ServerSettings): ServiceSettings {
  return {
    maxTokens: s.maxTokens,
    timeCapMs: s.timeCapMs,
    debounceMs: s.debounceMs,
    fimTemplate: s.fimTemplate,
    maxPrefixTokens: s.maxPrefixTokens,
    maxSuffixTokens: s.maxSuffixTokens,
    stopSequences: s.stopSequences,
    contextFromOpenFiles: s.contextFromOpenFiles,
    prefetch: s.prefetch,
    alternatives: s.alternatives,
  };
}

/** How long a model load waits for the previous one before starting anyway (ms). */
const LOAD_WAIT_MS = 30_000;

/** The loaded model and its completion service; one at a time, loads serialized (the newest wins). */
export class ModelHost {
  state: ServerState = 'noModel';
  message: string | undefined = 'No model configured: run "MixQ: Select Model…"';
  model: CompletionModel | undefined;
  service: CompletionService | undefined;
  /** Model/device identity of the newest load requested (loading or loaded); '' when none. */
  private requestedKey = '';
  private loadSeq = 0;
  private loading: Promise<void> = Promise.resolve();
  /** The newest settings: a load in progress builds its service from these when it finishes. */
  private settings: ServerSettings = defaultServerSettings;
  /** The remote backend's API key ('' = none): read at each request, so a new key needs no reconnect. */
  apiKey = '';
  /** The remote backend in use (mixq.backend = openai). */
  remote: RemoteBackend | undefined;

  constructor(
    private readonly documents: TextDocuments<TextDocument>,
    private readonly recent: RecentDocuments,
    private readonly notify: () => void,
    private readonly log: (msg: string) => void,
    /** The loaded model changed (undefined: none); the profiler follows it. */
    private readonly modelChanged: (model: CompletionModel | undefined) => void = () => undefined,
    /** Opens a model folder (tests substitute one that hangs or fails). */
    private readonly open: typeof openCompletionModel = openCompletionModel,
    /** How long a load waits for the previous one before starting anyway (ms). */
    private readonly loadWaitMs = LOAD_WAIT_MS,
  ) {}

  private static key(s: ServerSettings): string {
    if (s.backend === 'openai') return JSON.stringify(['openai', s.endpoint, s.remoteModel, s.fimTemplate]);
    return JSON.stringify([path.resolve(s.modelPath), loadOptions(s)]);
  }

  /** Applies settings: (re)loads when the model/device changed, else updates the running service. */
  async apply(settings: ServerSettings): Promise<void> {
    this.settings = settings;
    if (settings.backend === 'openai') {
      if (ModelHost.key(settings) !== this.requestedKey || this.state === 'error') await this.connectRemote(settings);
      else this.service?.updateSettings(serviceSettings(settings));
      return;
    }
    if (!settings.modelPath) {
      await this.unload('noModel', 'No model configured: run "MixQ: Select Model…"');
      return;
    }
    if (ModelHost.key(settings) !== this.requestedKey || this.state === 'error') {
      await this.load(settings);
      return;
    }
    if (this.state === 'loading') return; // the load in progress picks these settings up
    const service = this.service;
    if (service && this.model && service.template.id !== this.templateFor(settings)) {
      this.service = this.makeService(this.model, settings);
      await service.shutdown();
    } else {
      service?.updateSettings(serviceSettings(settings));
    }
  }

  /** Switches to the remote backend of `settings` (no connection yet: each request connects, and says how it failed). */
  private async connectRemote(settings: ServerSettings): Promise<void> {
    await this.unload('loading', `Connecting to ${settings.endpoint}`);
    this.requestedKey = ModelHost.key(settings);
    try {
      const sources = combinedSources({ all: () => this.documents.all() }, this.recent);
      const providers = [new OpenFilesContextProvider(sources, (uri) => path.basename(uri))];
      this.remote = new RemoteBackend(settings.endpoint, settings.remoteModel, () => this.apiKey, providers, settings.fimTemplate);
      this.service = new CompletionService(this.remote, serviceSettings(settings), [], this.notify);
      this.state = 'ready';
      this.message = undefined;
      this.log(`completions from the OpenAI-compatible server at ${this.remote.base}${settings.remoteModel ? ` (model ${settings.remoteModel})` : ''}`);
    } catch (e) {
      if (!(e instanceof BackendError)) throw e;
      this.state = 'error';
      this.message = e.message;
      this.log(e.message);
    }
    this.notify();
  }

  private templateFor(settings: ServerSettings): string | undefined {
    return this.model ? chooseTemplate(settings.fimTemplate, this.model.vocab).template.id : undefined;
  }

  private makeService(model: CompletionModel, settings: ServerSettings): CompletionService {
    const sources = combinedSources({ all: () => this.documents.all() }, this.recent);
    const providers = [new OpenFilesContextProvider(sources, (uri) => path.basename(uri))];
    const service = new CompletionService(model, serviceSettings(settings), providers, this.notify);
    this.log(`template ${service.template.id} (${service.templateReason})`);
    return service;
  }

  private async unload(state: ServerState, message: string | undefined): Promise<void> {
    this.loadSeq++;
    const old = { service: this.service, model: this.model };
    this.service = undefined;
    this.model = undefined;
    this.remote = undefined;
    this.modelChanged(undefined);
    this.requestedKey = '';
    this.state = state;
    this.message = message;
    this.notify();
    await old.service?.shutdown();
    await old.model?.dispose();
  }

  /** Loads the model `settings` name, even when it is the current one (a reload). */
  load(settings: ServerSettings): Promise<void> {
    this.settings = settings;
    this.requestedKey = ModelHost.key(settings);
    const seq = ++this.loadSeq;
    const run = async (): Promise<void> => {
      if (seq !== this.loadSeq) return; // a newer load was requested while this one queued
      const dir = path.resolve(settings.modelPath);
      const oldService = this.service;
      const oldModel = this.model;
      this.service = undefined;
      this.model = undefined;
      this.remote = undefined;
      this.modelChanged(undefined);
      this.state = 'loading';
      this.message = `Loading ${dir}`;
      this.notify();
      await oldService?.shutdown();
      await oldModel?.dispose();
      const t0 = performance.now();
      try {
        if (fs.existsSync(dir) && !fs.existsSync(path.join(dir, 'config.json'))) throw new Error(`no config.json in ${dir}: not a model folder`);
        const model = await this.open(dir, loadOptions(settings));
        if (seq !== this.loadSeq) {
          await model.dispose();
          return;
        }
        this.model = model;
        this.modelChanged(model);
        this.service = this.makeService(model, this.settings);
        this.state = 'ready';
        this.message = undefined;
        this.log(`loaded ${dir} in ${(performance.now() - t0).toFixed(0)} ms: ${model.info.description}`);
      } catch (e) {
        if (seq !== this.loadSeq) return;
        this.state = 'error';
        const reason = (e as Error).message;
        this.message = reason.includes(dir) ? `Could not load model: ${reason}` : `Could not load model ${dir}: ${reason}`;
        this.log(this.message);
      }
      this.notify();
    };
    // Time-boxed: a load still stuck after LOAD_WAIT_MS (a hung file system) no longer holds up newer ones; when it
    // ends at last, its seq is stale and it disposes what it loaded.
    const previous = this.loading;
    let timer: NodeJS.Timeout | undefined;
    const waited = Promise.race([
      previous.catch(() => undefined),
      new Promise<void>((resolve) => { timer = setTimeout(() => {
        this.log(`a previous model load is still running after ${this.loadWaitMs} ms; starting the newer one anyway`);
        resolve();
      }, this.loadWaitMs); }),
    ]).finally(() => clearTimeout(timer));
    this.loading = waited.then(run);
    return this.loading;
  }

  status(): ServerStatus {
    const svc = this.service;
    const model = this.model;
    const remote = this.remote;
    return {
      state: this.state,
      message: this.message,
      model: remote && svc ? {
        path: remote.base,
        name: remote.modelName ?? 'remote',
        description: `OpenAI-compatible server at ${remote.base}${remote.modelName ? `, model ${remote.modelName}` : ''}`,
        device: 'remote',
        devices: ['remote'],
        quantization: 'unknown',
        template: svc.template.id,
        contextLength: 0,
      } : model && svc ? {
        path: model.path,
        name: model.name,
        description: model.info.description,
        device: model.info.device,
        devices: model.info.devices,
        placement: { mode: model.info.placement.mode, devices: model.info.placement.devices },
        quantization: model.info.quantization,
        template: svc.template.id,
        contextLength: model.info.contextLength,
      } : undefined,
      activeGenerations: svc?.activeGenerations ?? 0,
      pendingRequests: svc?.pendingRequests ?? 0,
      last: svc?.last,
      counters: svc?.counters ?? zeroCounters(),
      backendError: svc?.backendError,
      rssBytes: process.memoryUsage.rss(),
      heapUsedBytes: process.memoryUsage().heapUsed,
      pid: process.pid,
    };
  }

  async shutdown(): Promise<void> {
    await this.unload('noModel', 'shut down');
  }
}

/**
 * The completion position, checked: a line outside the document (or a position that is not two non-negative
 * integers) is an InvalidParams error; a character past the end of its line means the line's end, as LSP specifies,
 * and the answer's range says so (never the invalid position echoed back).
 */
export function checkPosition(doc: TextDocument, position: unknown): Position {
  const p = position as Partial<Position> | undefined;
  if (!p || !Number.isInteger(p.line) || !Number.isInteger(p.character) || p.line! < 0 || p.character! < 0) {
    throw new ResponseError(ErrorCodes.InvalidParams, `inline completion: invalid position ${JSON.stringify(position)}`);
  }
  if (p.line! >= doc.lineCount) {
    throw new ResponseError(
      ErrorCodes.InvalidParams,
      `inline completion: line ${p.line} is past the end of ${doc.uri} (${doc.lineCount} lines, version ${doc.version})`,
    );
  }
  return doc.positionAt(doc.offsetAt({ line: p.line!, character: p.character! }));
}

export function startServer(connection: Connection): void {
  const documents = new TextDocuments(TextDocument);
  let settings = defaultServerSettings;
  const log = (msg: string): void => connection.console.log(`[mixq] ${msg}`);

  let notifyQueued = false;
  const notify = (): void => {
    // Coalesce bursts (50 cancelled requests end within one tick) into one notification.
    if (notifyQueued) return;
    notifyQueued = true;
    setImmediate(() => {
      notifyQueued = false;
      void connection.sendNotification(StatusChangedNotification, host.status());
    });
  };
  const recent = new RecentDocuments();
  const profiler = new ProfileHost(log);
  const host = new ModelHost(documents, recent, notify, log, (model) => profiler.attach(model));
  const quantize = registerQuantizeFeatures(connection, documents, log);

  connection.onInitialize((params): InitializeResult => {
    const init = params.initializationOptions as InitializationOptions | undefined;
    settings = normalizeSettings(defaultServerSettings, init?.settings, log);
    if (typeof init?.apiKey === 'string') host.apiKey = init.apiKey;
    quantize.initialize(params);
    return {
      capabilities: {
        textDocumentSync: TextDocumentSyncKind.Incremental,
        inlineCompletionProvider: {},
        ...quantizeCapabilities,
      },
      serverInfo: { name: 'mixq', version: '0.1.0' },
    };
  });

  connection.onInitialized(() => {
    void host.apply(settings);
  });

  documents.onDidChangeContent((e) => host.service?.documentChanged(e.document.uri));
  documents.onDidOpen((e) => recent.forget(e.document.uri));
  documents.onDidClose((e) => {
    host.service?.documentChanged(e.document.uri);
    recent.remember(e.document);
  });

  connection.languages.inlineCompletion.on(async (params, token): Promise<InlineCompletionList | null> => {
    const service = host.service;
    const doc = documents.get(params.textDocument.uri);
    if (!service || !doc) return null;
    const position = checkPosition(doc, params.position);
    const uri = doc.uri;
    const window = documentWindow(doc.getText(), doc.offsetAt(position), settings.maxPrefixTokens, settings.maxSuffixTokens, service.backend.maxTokenChars);
    const outcome = await service.complete({
      uri,
      languageId: doc.languageId,
      version: doc.version,
      text: window.text,
      offset: window.offset,
      windowStart: window.start,
      invoked: params.context.triggerKind === InlineCompletionTriggerKind.Invoked,
      currentVersion: () => documents.get(uri)?.version,
      onClientCancel: (listener) => token.onCancellationRequested(listener),
    });
    if (outcome.kind === 'cancelled') {
      const code = outcome.reason === 'client' ? LSPErrorCodes.RequestCancelled : LSPErrorCodes.ServerCancelled;
      throw new ResponseError(code, `completion cancelled (${outcome.reason}, while ${outcome.stage})`);
    }
    // A backend failure is in the status (mixq/statusChanged); the editor just gets nothing this time.
    if (outcome.kind === 'empty' || outcome.kind === 'error') return { items: [] };
    const texts = outcome.alternatives ?? [outcome.text];
    return { items: texts.map((insertText) => ({ insertText, range: { start: position, end: position } })) };
  });

  connection.onRequest(StatusRequest, () => host.status());

  connection.onRequest(ResetCountersRequest, () => {
    host.service?.resetCounters();
    return host.status();
  });

  connection.onRequest(LoadModelRequest, async (raw: LoadModelParams): Promise<LoadModelResult> => {
    const params = checkLoadModelParams(raw);
    if (settings.backend !== 'local') {
      const error = `mixq.backend is "${settings.backend}": completions come from ${settings.endpoint}; set mixq.backend to "local" to load a model folder`;
      return { ok: false, error, status: host.status() };
    }
    settings = normalizeSettings(settings, {
      modelPath: params.modelPath, device: params.device, gpus: params.gpus, devices: params.devices, placement: params.placement,
    }, log);
    await host.load(settings);
    const status = host.status();
    return { ok: status.state === 'ready', error: status.state === 'error' ? status.message : undefined, status };
  });

  // Profiling: answered from the engine's counters at once (never queued behind a completion).
  connection.onRequest(ProfileRequest, () => profiler.current());
  connection.onRequest(ProfileEnableRequest, (params: ProfileEnableParams) => profiler.enable(params?.enabled === true));
  connection.onRequest(ProfileResetRequest, () => profiler.reset());
  connection.onRequest(ProfileModelRequest, async (params: ProfileModelParams, token): Promise<ProfileModelResult> => {
    try {
      return await profiler.runBenchmark(params, {
        onProgress: (p) => void connection.sendNotification(ProfileProgressNotification, p),
        onCancel: (listener) => token.onCancellationRequested(listener),
      });
    } catch (e) {
      throw new ResponseError(ErrorCodes.InvalidRequest, (e as Error).message);
    }
  });

  connection.onNotification(PartialAcceptNotification, async (params: PartialAcceptParams) => {
    // The client sends the acceptance's didChange first; wait (briefly) until it has been applied here.
    const t0 = Date.now();
    while ((documents.get(params.uri)?.version ?? Infinity) < params.version && Date.now() - t0 < 1000) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const doc = documents.get(params.uri);
    if (!doc || doc.version !== params.version) return;
    const service = host.service;
    if (!service || !Number.isInteger(params.offset) || params.offset < 0 || params.offset > doc.getText().length) return;
    const window = documentWindow(doc.getText(), params.offset, settings.maxPrefixTokens, settings.maxSuffixTokens, service.backend.maxTokenChars);
    service.partiallyAccepted({
      uri: doc.uri, languageId: doc.languageId, version: doc.version, text: window.text, offset: window.offset,
      windowStart: window.start, invoked: true,
      currentVersion: () => documents.get(params.uri)?.version,
    });
  });

  connection.onNotification(ApiKeyNotification, (params: ApiKeyParams) => {
    host.apiKey = typeof params?.apiKey === 'string' ? params.apiKey : '';
  });

  connection.onNotification(ConfigureNotification, (patch) => {
    settings = normalizeSettings(settings, patch, log);
    void host.apply(settings);
  });

  connection.onShutdown(async () => {
    await host.shutdown();
  });

  documents.listen(connection);
  connection.listen();
}

if (require.main === module) {
  startServer(createConnection(ProposedFeatures.all));
}
