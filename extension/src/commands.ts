/**
 * The MixQ commands, each a small factory over the shared context. They answer sensibly while the server is down
 * (settings are still written; the menu still opens).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as vscode from 'vscode';

import { ProfileModelRequest, ProfileProgressNotification, type ProfileModelParams, type ProfileProgress } from '#protocol';
import { bundledModelPath, completionsEnabled, SECTION } from './config';
import { API_KEY_SECRET, type Ctx } from './ctx';
import { ProfilerPanel } from './profilerPanel';

type Command = (...args: unknown[]) => unknown;

/** Why `dir` cannot be a model folder, or undefined when it looks like one. */
export function checkModelFolder(dir: string): string | undefined {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) return `${dir} is not a folder`;
  const missing = ['config.json', 'tokenizer.json'].filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length > 0) return `${dir} is not a model folder (missing ${missing.join(', ')})`;
  const weights = fs.readdirSync(dir).some((f) => f.endsWith('.safetensors'));
  return weights ? undefined : `${dir} has no .safetensors weights`;
}

export function selectModel(ctx: Ctx): Command {
  return async (arg?: unknown) => {
    let dir = typeof arg === 'string' ? arg : undefined;
    if (!dir) {
      const bundled = bundledModelPath(ctx.extension.extensionPath);
      const items: Array<vscode.QuickPickItem & { dir?: string }> = [{ label: '$(folder-opened) Browse for a model folder…' }];
      if (bundled) items.push({ label: '$(package) mixq-tiny-code', description: 'the bundled tiny model', dir: bundled });
      const current = vscode.workspace.getConfiguration(SECTION).get<string>('modelPath', '');
      if (current) items.push({ label: '$(history) Current', description: current, dir: current });
      const pick = items.length === 1 ? items[0] : await vscode.window.showQuickPick(items, { title: 'MixQ: Select Model' });
      if (!pick) return;
      dir = pick.dir;
      if (!dir) {
        const uris = await vscode.window.showOpenDialog({
          canSelectFolders: true, canSelectFiles: false, canSelectMany: false,
          openLabel: 'Use this model', title: 'A model folder: config.json, tokenizer.json, *.safetensors (bf16/fp16 or AWQ int4)',
        });
        if (!uris || uris.length === 0) return;
        dir = uris[0].fsPath;
      }
    }
    const problem = checkModelFolder(dir);
    if (problem) {
      void vscode.window.showErrorMessage(`MixQ: ${problem}.`);
      return;
    }
    await vscode.workspace.getConfiguration(SECTION).update('modelPath', dir, vscode.ConfigurationTarget.Global);
    if (!ctx.running) return; // applied when the server starts
    const status = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `MixQ: loading ${path.basename(dir)}…` },
      () => ctx.nextSettledStatus(10 * 60_000),
    );
    if (status?.state === 'ready') void vscode.window.showInformationMessage(`MixQ: using ${status.model?.name} (${status.model?.device}).`);
  };
}

export function restartServer(ctx: Ctx): Command {
  return () => ctx.restart();
}

export function showLog(ctx: Ctx): Command {
  return () => ctx.log.show();
}

export function toggleCompletions(ctx: Ctx): Command {
  return async () => {
    const next = !completionsEnabled();
    await vscode.workspace.getConfiguration(SECTION).update('enable', next, vscode.ConfigurationTarget.Global);
    ctx.render();
    void vscode.window.setStatusBarMessage(`MixQ: completions ${next ? 'on' : 'off'}`, 3000);
  };
}

export function showMenu(ctx: Ctx): Command {
  return async () => {
    await ctx.refreshStatus().catch(() => undefined);
    const enabled = completionsEnabled();
    const items: Array<vscode.QuickPickItem & { command: string }> = [
      { label: enabled ? '$(circle-slash) Turn completions off' : '$(sparkle) Turn completions on', command: 'mixq.toggleCompletions' },
      { label: '$(folder-opened) Select Model…', description: ctx.serverStatus?.model?.path, command: 'mixq.selectModel' },
      { label: '$(debug-restart) Restart Server', command: 'mixq.restartServer' },
      { label: '$(graph) Show Statistics', description: ctx.statsSummary?.(), command: 'mixq.showStatistics' },
      { label: '$(pulse) Open Profiler', command: 'mixq.openProfiler' },
      { label: '$(output) Show Log', command: 'mixq.showLog' },
      { label: '$(gear) Settings', command: 'mixq.openSettings' },
    ];
    const pick = await vscode.window.showQuickPick(items, { title: 'MixQ' });
    if (pick) await vscode.commands.executeCommand(pick.command);
  };
}

export function openSettings(): Command {
  return () => vscode.commands.executeCommand('workbench.action.openSettings', '@ext:mixq.mixq');
}

export function openProfiler(ctx: Ctx): Command {
  return () => {
    ProfilerPanel.show(ctx);
  };
}

/** The standard benchmark of `MixQ: Profile Model`: prefill 128 random tokens, decode 64 (command args override). */
export const PROFILE_RUN: ProfileModelParams = { prefillTokens: 128, decodeTokens: 64 };

/** Runs the benchmark on the loaded model with progress and cancel, then opens the profiler on its results. */
export function profileModel(ctx: Ctx): Command {
  return async (arg?: unknown) => {
    const params = { ...PROFILE_RUN, ...(typeof arg === 'object' && arg ? (arg as Partial<ProfileModelParams>) : {}) };
    const client = ctx.client;
    if (!client || !ctx.running) {
      void vscode.window.showErrorMessage('MixQ: the server is not running (MixQ: Restart Server).');
      return;
    }
    if (ctx.serverStatus?.state !== 'ready') {
      void vscode.window.showErrorMessage(`MixQ: no model is ready to profile${ctx.serverStatus?.message ? ` (${ctx.serverStatus.message})` : ''}.`);
      return;
    }
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'MixQ: profiling the model', cancellable: true },
      async (progress, token) => {
        let reported = 0;
        const sub = client.onNotification(ProfileProgressNotification, (p: ProfileProgress) => {
          const fraction = p.phase === 'done' ? 1 : p.total > 0 ? (0.1 + 0.8 * p.done / p.total) : 0;
          const message = p.phase === 'queued' ? 'waiting for the running completion…'
            : p.phase === 'prefill' ? `prefill ${params.prefillTokens} tokens…`
              : p.phase === 'decode' ? `decode ${p.done}/${p.total}`
                : p.phase === 'ceilings' ? 'measuring the copy bandwidth…' : 'done';
          progress.report({ message, increment: Math.max(0, (fraction - reported) * 100) });
          reported = Math.max(reported, fraction);
        });
        try {
          return await client.sendRequest(ProfileModelRequest, params, token);
        } catch (e) {
          if (!token.isCancellationRequested) void vscode.window.showErrorMessage(`MixQ: profiling failed: ${(e as Error).message}`);
          return undefined;
        } finally {
          sub.dispose();
        }
      },
    );
    if (!result) return;
    const perSec = (n: number, ms: number): string => (ms > 0 ? ((n * 1000) / ms).toFixed(1) : '–');
    const note = result.cancelled
      ? `Profile Model cancelled after ${result.decodeTokens} tokens`
      : `Profile Model: prefill ${result.prefillTokens} tokens (${perSec(result.prefillTokens, result.prefillMs)} tokens/s), ` +
        `decode ${result.decodeTokens} (${perSec(Math.max(0, result.decodeTokens - 1), result.decodeMs)} tokens/s)`;
    ProfilerPanel.show(ctx, { data: result.profile, note });
  };
}

/** MixQ: Set API Key… — the remote backend's key, kept in VS Code's SecretStorage (empty input removes it). */
export function setApiKey(ctx: Ctx): Command {
  return async () => {
    const key = await vscode.window.showInputBox({
      title: 'MixQ: API key of the remote server (mixq.endpoint)',
      prompt: 'Sent as "Authorization: Bearer KEY" to mixq.endpoint; kept in VS Code\'s secret storage. Empty: remove the key.',
      password: true,
      ignoreFocusOut: true,
    });
    if (key === undefined) return;
    if (key.trim() === '') {
      await ctx.extension.secrets.delete(API_KEY_SECRET);
      void vscode.window.showInformationMessage('MixQ: API key removed.');
    } else {
      await ctx.extension.secrets.store(API_KEY_SECRET, key.trim());
      void vscode.window.showInformationMessage('MixQ: API key saved in VS Code\'s secret storage.');
    }
  };
}
