/**
 * The client's shared context: the language client's lifecycle (start, restart, crash policy), the output channel,
 * the status bar item, and settings → server. Commands (./commands) are small functions over this.
 */
import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  State,
  TransportKind,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';

import {
  ApiKeyNotification,
  ConfigureNotification,
  StatusChangedNotification,
  StatusRequest,
  type InitializationOptions,
  type ServerStatus,
} from '#protocol';
import { completionsEnabled, languageEnabled, restrictedModeNotice, SECTION, serverSettings } from './config';
import { ModelNotices } from './notices';
import { RestartPolicy } from './restartPolicy';
import { renderStatus, type ClientPhase } from './status';

/** The SecretStorage key of the remote backend's API key. */
export const API_KEY_SECRET = 'mixq.apiKey';

export type CompletionObserver = (
  document: vscode.TextDocument,
  position: vscode.Position,
  result: vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined,
  latencyMs: number,
) => void;

export class Ctx implements vscode.Disposable {
  readonly log: vscode.LogOutputChannel;
  readonly statusItem: vscode.StatusBarItem;
  client: LanguageClient | undefined;
  serverStatus: ServerStatus | undefined;
  phase: ClientPhase = 'stopped';
  private phaseDetail: string | undefined;
  private readonly restarts = new RestartPolicy();
  private readonly notices: ModelNotices;
  /** Sees every completion answer shown to the user (statistics, acceptance commands: ./completionUx). */
  completionObserver: CompletionObserver | undefined;
  /** One line of the local statistics for the menu. */
  statsSummary: (() => string) | undefined;
  private readonly statusEmitter = new vscode.EventEmitter<ServerStatus>();
  private readonly disposables: vscode.Disposable[] = [];
  /** The remote backend's API key from SecretStorage ('' = none); read before the server starts. */
  private apiKey = '';

  constructor(readonly extension: vscode.ExtensionContext) {
    this.log = vscode.window.createOutputChannel('MixQ', { log: true });
    this.statusItem = vscode.window.createStatusBarItem('mixq.status', vscode.StatusBarAlignment.Right, 100);
    this.statusItem.name = 'MixQ';
    this.notices = new ModelNotices(this.log);
    this.disposables.push(
      this.log,
      this.statusItem,
      this.statusEmitter,
      this.notices,
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (!e.affectsConfiguration(SECTION)) return;
        this.render();
        this.announceRestrictedMode();
        void this.client?.sendNotification(ConfigureNotification, serverSettings(this.extension.extensionPath));
      }),
      vscode.workspace.onDidGrantWorkspaceTrust(() => {
        // The workspace's own settings apply from now on.
        this.log.info('workspace trusted: its mixq.* settings apply now');
        this.lastRestrictedNotice = undefined;
        void this.client?.sendNotification(ConfigureNotification, serverSettings(this.extension.extensionPath));
      }),
    );
    this.render();
    this.announceRestrictedMode();
  }

  private lastRestrictedNotice: string | undefined;

  /** In Restricted Mode: says that only user settings apply, and which workspace settings are ignored (once each). */
  private announceRestrictedMode(): void {
    const notice = restrictedModeNotice();
    if (!notice || notice === this.lastRestrictedNotice) return;
    this.lastRestrictedNotice = notice;
    this.log.warn(notice);
    if (notice.includes('ignored')) void vscode.window.showWarningMessage(`MixQ: ${notice}`);
  }

  get running(): boolean {
    return this.client?.state === State.Running;
  }

  render(): void {
    const r = renderStatus({ phase: this.phase, server: this.serverStatus, enabled: completionsEnabled(), detail: this.phaseDetail });
    this.statusItem.text = r.text;
    this.statusItem.tooltip = r.tooltip;
    this.statusItem.command = r.command;
    this.statusItem.backgroundColor = r.warning ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
    this.statusItem.show();
  }

  private setPhase(phase: ClientPhase, detail?: string): void {
    this.phase = phase;
    this.phaseDetail = detail;
    this.render();
  }

  private onServerStatus(status: ServerStatus): void {
    const previous = this.serverStatus?.state;
    this.serverStatus = status;
    this.render();
    this.statusEmitter.fire(status);
    // Notices of the model state replace each other and close when the state no longer calls for them.
    this.notices.update(status);
    if (status.state === 'ready' && previous !== 'ready') {
      this.log.info(`model ready: ${status.model?.description ?? ''} (template ${status.model?.template ?? '?'})`);
    }
  }

  private createClient(): LanguageClient {
    const serverModule = this.extension.asAbsolutePath('dist/server.js');
    const serverOptions: ServerOptions = {
      run: { module: serverModule, transport: TransportKind.ipc },
      debug: { module: serverModule, transport: TransportKind.ipc, options: { execArgv: ['--nolazy', '--inspect=6019'] } },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      outputChannel: this.log,
      // A function: a restarted server gets the settings of now, not those of the first start.
      initializationOptions: (): InitializationOptions => ({ settings: serverSettings(this.extension.extensionPath), apiKey: this.apiKey }),
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => {
          const decision = this.restarts.onCrash();
          if (!decision.restart) {
            const message = `The MixQ server stopped ${decision.crashes} times in ${this.restarts.windowMs / 60_000} minutes and will not be restarted. See "MixQ: Show Log"; "MixQ: Restart Server" tries again.`;
            this.setPhase('crashed', message);
            this.log.error(message);
            void vscode.window.showErrorMessage(message, 'Show Log', 'Restart Server').then((pick) => {
              if (pick === 'Show Log') this.log.show();
              if (pick === 'Restart Server') void this.restart();
            });
            return { action: CloseAction.DoNotRestart, handled: true };
          }
          const message = `The MixQ server stopped unexpectedly; restarting (${decision.crashes}/${this.restarts.maxRestarts}).`;
          this.log.warn(message);
          this.serverStatus = undefined;
          this.setPhase('restarting');
          void vscode.window.showWarningMessage(message, 'Show Log').then((pick) => {
            if (pick) this.log.show();
          });
          return { action: CloseAction.Restart, handled: true };
        },
      },
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          if (!completionsEnabled() || !languageEnabled(document.languageId)) return undefined;
          const t0 = Date.now();
          const result = await next(document, position, context, token);
          if (!token.isCancellationRequested) this.completionObserver?.(document, position, result, Date.now() - t0);
          return result;
        },
      },
    };
    const client = new LanguageClient('mixq', 'MixQ', serverOptions, clientOptions);
    client.onDidChangeState((e) => {
      if (e.newState === State.Running) {
        this.setPhase('running');
        void client.sendRequest(StatusRequest).then((s) => this.onServerStatus(s), () => undefined);
      } else if (e.newState === State.Starting && this.phase !== 'restarting') {
        this.setPhase('starting');
      } else if (e.newState === State.Stopped && this.phase === 'running') {
        this.setPhase('stopped', 'The MixQ language server stopped.');
      }
    });
    this.disposables.push(client.onNotification(StatusChangedNotification, (s) => this.onServerStatus(s)));
    return client;
  }

  /** Reads the API key from SecretStorage, and follows its changes (MixQ: Set API Key…, another window). */
  async loadApiKey(): Promise<void> {
    this.apiKey = (await this.extension.secrets.get(API_KEY_SECRET)) ?? '';
    this.disposables.push(this.extension.secrets.onDidChange(async (e) => {
      if (e.key !== API_KEY_SECRET) return;
      this.apiKey = (await this.extension.secrets.get(API_KEY_SECRET)) ?? '';
      void this.client?.sendNotification(ApiKeyNotification, { apiKey: this.apiKey });
    }));
  }

  async start(): Promise<void> {
    if (this.client) return;
    this.restarts.reset();
    this.serverStatus = undefined;
    this.setPhase('starting');
    this.client = this.createClient();
    try {
      await this.client.start();
    } catch (e) {
      const message = `The MixQ server failed to start: ${(e as Error).message}`;
      this.log.error(message);
      this.setPhase('crashed', message);
      void vscode.window.showErrorMessage(message, 'Show Log').then((pick) => pick && this.log.show());
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.stop(5000);
      } catch (e) {
        this.log.warn(`stopping the server: ${(e as Error).message}`);
      }
    }
    this.serverStatus = undefined;
    this.setPhase('stopped');
  }

  async restart(): Promise<void> {
    this.log.info('restarting the server');
    await this.stop();
    await this.start();
  }

  /** Asks the running server for its status (undefined while it is down). */
  async refreshStatus(): Promise<ServerStatus | undefined> {
    if (!this.client || !this.running) return undefined;
    const s = await this.client.sendRequest(StatusRequest);
    this.onServerStatus(s);
    return s;
  }

  /** Resolves with the next status whose state is settled (ready / error / noModel), or undefined on timeout. */
  nextSettledStatus(timeoutMs: number): Promise<ServerStatus | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        sub.dispose();
        resolve(undefined);
      }, timeoutMs);
      const sub = this.statusEmitter.event((s) => {
        if (s.state === 'loading') return;
        clearTimeout(timer);
        sub.dispose();
        resolve(s);
      });
    });
  }

  dispose(): void {
    void this.stop();
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}
