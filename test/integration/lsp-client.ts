/**
 * Starts the real language server process (out/server/server.js --stdio) and talks JSON-RPC to it with
 * vscode-languageserver-protocol's client side, as the VS Code client would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  createProtocolConnection,
  DidChangeTextDocumentNotification,
  DidOpenTextDocumentNotification,
  InitializedNotification,
  InitializeRequest,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  StreamMessageReader,
  StreamMessageWriter,
  type InlineCompletionItem,
  type InlineCompletionList,
  type ProtocolConnection,
} from 'vscode-languageserver-protocol/node';

import * as P from '#protocol';
import type * as protocol from '#protocol';
import { repoRoot } from '../helpers';

/** The compiled server, or another build of it (MIXQ_TEST_SERVER=dist/server.js tests the bundle). */
export const serverScript = process.env.MIXQ_TEST_SERVER ? path.resolve(repoRoot, process.env.MIXQ_TEST_SERVER) : path.join(repoRoot, 'out', 'server', 'server.js');
export const addonPath = path.join(repoRoot, 'build', 'Release', 'mixq.node');
/** node:test skip option when the native addon has not been built. */
export const needsAddon: string | false = fs.existsSync(addonPath) ? false : 'skipped: build/Release/mixq.node not built (npm run build:native)';

export class TestServer {
  readonly statuses: protocol.ServerStatus[] = [];
  private readonly texts = new Map<string, { text: string; version: number; languageId: string }>();
  private constructor(readonly proc: ChildProcess, readonly conn: ProtocolConnection, readonly stderr: string[]) {}

  static async start(settings: Partial<protocol.ServerSettings>): Promise<TestServer> {
    const proc = spawn(process.execPath, [serverScript, '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const stderr: string[] = [];
    proc.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    const conn = createProtocolConnection(new StreamMessageReader(proc.stdout!), new StreamMessageWriter(proc.stdin!));
    const server = new TestServer(proc, conn, stderr);
    conn.onNotification(P.StatusChangedNotification, (s: protocol.ServerStatus) => {
      server.statuses.push(s);
    });
    conn.onNotification('window/logMessage', () => undefined);
    conn.listen();
    await conn.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      rootUri: null,
      capabilities: {},
      initializationOptions: { settings } satisfies protocol.InitializationOptions,
    });
    await conn.sendNotification(InitializedNotification.type, {});
    return server;
  }

  /** Polls mixq/status until `pred` holds (or throws after timeoutMs). */
  async waitFor(pred: (s: protocol.ServerStatus) => boolean, timeoutMs = 60_000): Promise<protocol.ServerStatus> {
    const t0 = Date.now();
    for (;;) {
      const s = await this.status();
      if (pred(s)) return s;
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting; last status ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  status(): Promise<protocol.ServerStatus> {
    return this.conn.sendRequest(P.StatusRequest);
  }

  resetCounters(): Promise<protocol.ServerStatus> {
    return this.conn.sendRequest(P.ResetCountersRequest);
  }

  loadModel(params: protocol.LoadModelParams): Promise<protocol.LoadModelResult> {
    return this.conn.sendRequest(P.LoadModelRequest, params);
  }

  configure(patch: Partial<protocol.ServerSettings>): Promise<void> {
    return this.conn.sendNotification(P.ConfigureNotification, patch);
  }

  async open(uri: string, text: string, languageId = 'python'): Promise<void> {
    this.texts.set(uri, { text, version: 1, languageId });
    await this.conn.sendNotification(DidOpenTextDocumentNotification.type, { textDocument: { uri, languageId, version: 1, text } });
  }

  text(uri: string): string {
    return this.texts.get(uri)!.text;
  }

  /** Replaces the whole text (full-document change event). */
  async setText(uri: string, text: string): Promise<number> {
    const doc = this.texts.get(uri)!;
    doc.text = text;
    doc.version++;
    await this.conn.sendNotification(DidChangeTextDocumentNotification.type, { textDocument: { uri, version: doc.version }, contentChanges: [{ text }] });
    return doc.version;
  }

  /** Inline completion at a text offset; `invoked` = explicit trigger (no debounce). */
  complete(uri: string, offset: number, invoked = true): Promise<InlineCompletionList | InlineCompletionItem[] | null> {
    const text = this.texts.get(uri)!.text;
    const before = text.slice(0, offset).split('\n');
    const position = { line: before.length - 1, character: before[before.length - 1].length };
    return this.conn.sendRequest(InlineCompletionRequest.type, {
      textDocument: { uri },
      position,
      context: { triggerKind: invoked ? InlineCompletionTriggerKind.Invoked : InlineCompletionTriggerKind.Automatic },
    });
  }

  async stop(): Promise<void> {
    try {
      await Promise.race([this.conn.sendRequest('shutdown'), new Promise((r) => setTimeout(r, 5000))]);
      await this.conn.sendNotification('exit');
    } catch {
      // already gone
    }
    this.conn.dispose();
    if (this.proc.exitCode === null) {
      await new Promise((r) => {
        const timer = setTimeout(() => {
          this.proc.kill('SIGKILL');
          r(undefined);
        }, 3000);
        this.proc.once('exit', () => {
          clearTimeout(timer);
          r(undefined);
        });
      });
    }
  }
}

/** The single suggestion's text of an inline completion answer ('' when none). */
export function ghostText(answer: InlineCompletionList | InlineCompletionItem[] | null): string {
  const items = answer === null ? [] : Array.isArray(answer) ? answer : answer.items;
  if (items.length === 0) return '';
  const t = items[0].insertText;
  return typeof t === 'string' ? t : t.value;
}
