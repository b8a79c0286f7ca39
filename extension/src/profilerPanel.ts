/**
 * The profiler panel (issue 13): one webview, refreshed once a second from `mixq/profile` while visible and not
 * paused. It switches the server's profiling on while open (again after a server restart, which starts with it off)
 * and off when closed. Export writes what is shown (a paused view stays what it was).
 */
import * as vscode from 'vscode';

import {
  chromeTrace,
  profileCsv,
  ProfileEnableRequest,
  ProfileRequest,
  ProfileResetRequest,
  profileRows,
  type ProfileData,
} from '#protocol';
import type { Ctx } from './ctx';
import type { FromWebview, ToWebview } from './profilerMessages';
import { makeNonce, profilerHtml } from './profilerHtml';

const REFRESH_MS = 1000;

export class ProfilerPanel implements vscode.Disposable {
  private static current: ProfilerPanel | undefined;
  private readonly panel: vscode.WebviewPanel;
  private readonly disposables: vscode.Disposable[] = [];
  private timer: NodeJS.Timeout | undefined;
  private paused = false;
  private shown: ProfileData | undefined;
  private polling = false;

  /** Shows the panel (creating it once); with `result`, shows that data paused instead of the live profile. */
  static show(ctx: Ctx, result?: { data: ProfileData; note: string }): ProfilerPanel {
    const p = ProfilerPanel.current ?? new ProfilerPanel(ctx);
    ProfilerPanel.current = p;
    p.panel.reveal(undefined, false);
    if (result) p.showResult(result.data, result.note);
    return p;
  }

  private constructor(private readonly ctx: Ctx) {
    const root = vscode.Uri.joinPath(ctx.extension.extensionUri, 'dist', 'webview');
    this.panel = vscode.window.createWebviewPanel('mixq.profiler', 'MixQ Profiler', vscode.ViewColumn.Active, {
      enableScripts: true,
      localResourceRoots: [root],
      retainContextWhenHidden: false,
    });
    const webview = this.panel.webview;
    webview.html = profilerHtml({
      cspSource: webview.cspSource,
      nonce: makeNonce(),
      scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(root, 'profiler.js')).toString(),
      styleUri: webview.asWebviewUri(vscode.Uri.joinPath(root, 'profiler.css')).toString(),
    });
    this.disposables.push(
      webview.onDidReceiveMessage((m: FromWebview) => void this.onMessage(m)),
      this.panel.onDidChangeViewState(() => this.schedule()),
      this.panel.onDidDispose(() => this.dispose()),
    );
    this.schedule();
  }

  private post(m: ToWebview): void {
    void this.panel.webview.postMessage(m);
  }

  private showResult(data: ProfileData, note: string): void {
    this.paused = true;
    this.shown = data;
    this.post({ type: 'paused', paused: true });
    this.post({ type: 'profile', data, note });
    this.schedule();
  }

  private schedule(): void {
    const live = this.panel.visible && !this.paused;
    if (live && !this.timer) {
      this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
      void this.refresh();
    } else if (!live && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** One poll: switch profiling on when the server has it off (first open, restarted server), then show the data. */
  private async refresh(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const client = this.ctx.client;
      if (!client || !this.ctx.running) {
        this.post({ type: 'status', text: 'The MixQ server is not running; the profile shows again once it is back.', level: 'warning' });
        return;
      }
      let data = await client.sendRequest(ProfileRequest);
      if (!data.enabled) data = await client.sendRequest(ProfileEnableRequest, { enabled: true });
      if (this.paused) return;
      this.shown = data;
      const state = this.ctx.serverStatus?.state;
      const note = data.model ? `live · ${data.model}` : state === 'loading' ? 'loading the model…' : 'no model loaded';
      this.post({ type: 'profile', data, note });
    } catch (e) {
      this.post({ type: 'status', text: `Could not read the profile: ${(e as Error).message}`, level: 'warning' });
    } finally {
      this.polling = false;
    }
  }

  private async onMessage(m: FromWebview): Promise<void> {
    switch (m.type) {
      case 'ready':
        this.post({ type: 'paused', paused: this.paused });
        if (this.shown) this.post({ type: 'profile', data: this.shown, note: this.paused ? 'paused' : 'live' });
        void this.refresh();
        return;
      case 'pause':
        this.paused = m.paused;
        this.schedule();
        return;
      case 'reset':
        if (this.ctx.client && this.ctx.running) {
          this.shown = await this.ctx.client.sendRequest(ProfileResetRequest);
          this.post({ type: 'profile', data: this.shown, note: 'reset' });
        }
        return;
      case 'profileModel':
        await vscode.commands.executeCommand('mixq.profileModel');
        return;
      case 'export':
        await this.export(m.format);
        return;
    }
  }

  private async export(format: 'trace' | 'csv'): Promise<void> {
    const data = this.shown;
    if (!data || data.devices.length === 0) {
      void vscode.window.showInformationMessage('MixQ: nothing profiled yet to export.');
      return;
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
    const ext = format === 'trace' ? 'json' : 'csv';
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
    const target = await vscode.window.showSaveDialog({
      defaultUri: folder ? vscode.Uri.joinPath(folder, `mixq-profile-${stamp}.${ext}`) : undefined,
      filters: format === 'trace' ? { 'Chrome trace (Perfetto)': ['json'] } : { CSV: ['csv'] },
      title: format === 'trace' ? 'Export the timeline as a Chrome trace' : 'Export the table as CSV',
    });
    if (!target) return;
    const text = format === 'trace' ? JSON.stringify(chromeTrace(data)) + '\n' : profileCsv(profileRows(data));
    await vscode.workspace.fs.writeFile(target, new TextEncoder().encode(text));
    void vscode.window.showInformationMessage(`MixQ: wrote ${target.fsPath}`);
  }

  dispose(): void {
    if (ProfilerPanel.current === this) ProfilerPanel.current = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    // Closed: timing off again (it costs nothing measurable off, a little on).
    if (this.ctx.client && this.ctx.running) void this.ctx.client.sendRequest(ProfileEnableRequest, { enabled: false }).catch(() => undefined);
    for (const d of this.disposables.splice(0)) d.dispose();
    this.panel.dispose();
  }
}
