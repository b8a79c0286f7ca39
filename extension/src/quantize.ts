/**
 * The quantize commands: `MixQ: Quantize Model…` (a wizard), the recipe lens's `Quantize with this recipe`,
 * `MixQ: New Quantization Recipe` and `MixQ: Cancel Quantization`. The job runs in the server (mixq/quantize);
 * here: the questions, a cancellable progress notification (layer i of N, phase, ETA), a status bar item while it
 * runs (completions keep working, slower: the quantizer shares the CPU), and at the end the offer to use the model.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as vscode from 'vscode';

import {
  CheckQuantizeSourceRequest,
  QuantizeCancelRequest,
  QuantizeProgressNotification,
  QuantizeRequest,
  type QuantizeJobSettings,
  type QuantizeParams,
  type QuantizeProgress,
  type QuantizeResult,
} from '#protocol';
import { SECTION } from './config';
import type { Ctx } from './ctx';
import { defaultOutputFor, formatSeconds, progressMessage, starterRecipe } from './quantizeText';

type Command = (...args: unknown[]) => unknown;

const workspaceFolder = (): string | undefined => vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;

let jobStatusItem: vscode.StatusBarItem | undefined;

function showJobStatus(p: QuantizeProgress | undefined): void {
  if (!p) {
    jobStatusItem?.hide();
    return;
  }
  jobStatusItem ??= vscode.window.createStatusBarItem('mixq.quantize', vscode.StatusBarAlignment.Right, 99);
  jobStatusItem.name = 'MixQ Quantization';
  jobStatusItem.text = p.layers > 0 ? `$(sync~spin) MixQ quantizing ${p.layer + 1}/${p.layers}` : '$(sync~spin) MixQ quantizing';
  jobStatusItem.tooltip = `Quantizing ${p.source} → ${p.output}: ${progressMessage(p)}.\nCompletions keep working meanwhile, slower: the quantizer shares the CPU. Click to cancel.`;
  jobStatusItem.command = 'mixq.cancelQuantization';
  jobStatusItem.show();
}

/** Runs one server job with a cancellable progress notification; offers the new model at the end. */
async function runJob(ctx: Ctx, params: QuantizeParams, title: string): Promise<QuantizeResult | undefined> {
  const client = ctx.client;
  if (!client || !ctx.running) {
    void vscode.window.showErrorMessage('MixQ: the server is not running, so it cannot quantize (MixQ: Restart Server).');
    return undefined;
  }
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title, cancellable: true },
    async (progress, token) => {
      let reported = 0;
      const sub = client.onNotification(QuantizeProgressNotification, (p: QuantizeProgress) => {
        progress.report({ message: progressMessage(p), increment: Math.max(0, (p.fraction - reported) * 100) });
        reported = Math.max(reported, p.fraction);
        showJobStatus(p);
      });
      try {
        return await client.sendRequest(QuantizeRequest, { workspaceFolder: workspaceFolder(), ...params }, token);
      } catch (e) {
        if (token.isCancellationRequested || /cancelled/.test((e as Error).message)) {
          void vscode.window.showInformationMessage('MixQ: quantization cancelled; nothing was written.');
        } else {
          void vscode.window.showErrorMessage(`MixQ: quantization failed: ${(e as Error).message}`);
        }
        return undefined;
      } finally {
        sub.dispose();
        showJobStatus(undefined);
      }
    },
  );
  if (!result) return undefined;
  const note = result.warnings.length > 0 ? ` (${result.warnings.length} warning${result.warnings.length === 1 ? '' : 's'} in the log)` : '';
  for (const w of result.warnings) ctx.log.warn(`quantize: ${w}`);
  const use = 'Use for Completions';
  const pick = await vscode.window.showInformationMessage(
    `MixQ: wrote ${result.outputDir} (${result.method} int4 g${result.groupSize}, ${(result.outputBytes / 1e6).toFixed(0)} MB) in ${formatSeconds(result.seconds)}${note}.`,
    use,
  );
  if (pick === use) await vscode.workspace.getConfiguration(SECTION).update('modelPath', result.outputDir, vscode.ConfigurationTarget.Global);
  return result;
}

async function pickFolder(title: string, openLabel: string, defaultUri?: vscode.Uri): Promise<string | undefined> {
  const uris = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, canSelectMany: false, title, openLabel, defaultUri });
  return uris?.[0]?.fsPath;
}

/** `MixQ: Quantize Model…`: source (checked first), output, calibration, group size, method, device; then the job. */
export function quantizeModel(ctx: Ctx): Command {
  return async () => {
    if (!ctx.client || !ctx.running) {
      void vscode.window.showErrorMessage('MixQ: the server is not running, so it cannot quantize (MixQ: Restart Server).');
      return;
    }
    const source = await pickFolder('MixQ: the 16-bit Mixtral model to quantize', 'Quantize this model');
    if (!source) return;
    const check = await ctx.client.sendRequest(CheckQuantizeSourceRequest, { path: source });
    if (!check.ok) {
      void vscode.window.showErrorMessage(`MixQ: cannot quantize ${path.basename(source)}: ${check.reason}.`);
      return;
    }
    const method = await vscode.window.showQuickPick(
      [
        { label: 'awq', description: 'activation-aware, calibrated on your code (hours on a CPU for a full-size model)' },
        { label: 'rtn', description: 'round to nearest: no calibration, minutes' },
      ],
      { title: 'MixQ: quantization method' },
    );
    if (!method) return;
    const group = await vscode.window.showQuickPick(['128', '64', '32'].map((g) => ({ label: g, description: g === '128' ? 'default' : 'more accurate, larger' })), { title: 'MixQ: group size' });
    if (!group) return;
    const groupSize = Number(group.label) as 32 | 64 | 128;
    const settings: QuantizeJobSettings = { source, output: '', method: method.label as 'awq' | 'rtn', groupSize };
    if (settings.method === 'awq') {
      const calib = await vscode.window.showQuickPick(
        [
          { label: 'This workspace\'s source files', description: workspaceFolder() ?? '(no folder open)', id: 'workspace' },
          { label: 'A JSONL or text file…', id: 'file' },
          { label: 'A folder…', id: 'folder' },
        ],
        { title: 'MixQ: calibration data' },
      );
      if (!calib) return;
      if (calib.id === 'file') {
        const uris = await vscode.window.showOpenDialog({ canSelectFiles: true, canSelectMany: false, filters: { 'Calibration data': ['jsonl', 'txt', 'md'] }, title: 'MixQ: calibration data' });
        if (!uris?.[0]) return;
        settings.calibPath = uris[0].fsPath;
      } else if (calib.id === 'folder') {
        const dir = await pickFolder('MixQ: a folder of calibration source files', 'Calibrate on this folder');
        if (!dir) return;
        settings.calibPath = dir;
      } else if (!workspaceFolder()) {
        void vscode.window.showErrorMessage('MixQ: no workspace folder is open to calibrate on; choose a file or folder.');
        return;
      }
    }
    const device = await vscode.window.showQuickPick(
      [{ label: 'auto', description: 'the CPU in this build' }, { label: 'cpu' }],
      { title: 'MixQ: quantize on' },
    );
    if (!device) return;
    settings.device = device.label as 'auto' | 'cpu';
    const output = await vscode.window.showInputBox({
      title: 'MixQ: output folder (a new folder)',
      value: defaultOutputFor(source, settings.method!, groupSize),
      validateInput: (v) => (v.trim() === '' ? 'give a folder' : path.resolve(v) === path.resolve(source) ? 'not the source folder' : undefined),
    });
    if (!output) return;
    settings.output = path.resolve(output.trim());
    if (fs.existsSync(settings.output) && fs.readdirSync(settings.output).length > 0) {
      const replace = 'Replace When Done';
      const answer = await vscode.window.showWarningMessage(
        `${settings.output} already exists. Replace it? The old folder is removed only after the new model is complete.`, { modal: true }, replace,
      );
      if (answer !== replace) return;
      settings.overwrite = true;
    }
    await runJob(ctx, { settings }, `MixQ: quantizing ${path.basename(source)} (${settings.method}, g${groupSize})`);
  };
}

/** The recipe lens's command (argument: the recipe's URI), or the active editor's recipe. */
export function quantizeWithRecipe(ctx: Ctx): Command {
  return async (arg?: unknown) => {
    const uri = typeof arg === 'string' ? vscode.Uri.parse(arg) : vscode.window.activeTextEditor?.document.uri;
    if (!uri || !/\.mixq\.toml$/i.test(uri.path)) {
      void vscode.window.showErrorMessage('MixQ: open a *.mixq.toml recipe first (MixQ: New Quantization Recipe writes one).');
      return;
    }
    const errors = vscode.languages.getDiagnostics(uri).filter((d) => d.severity === vscode.DiagnosticSeverity.Error);
    if (errors.length > 0) {
      void vscode.window.showErrorMessage(`MixQ: the recipe has ${errors.length} error${errors.length === 1 ? '' : 's'}; first: line ${errors[0].range.start.line + 1}: ${errors[0].message}`);
      return;
    }
    await runJob(ctx, { recipeUri: uri.toString() }, `MixQ: quantizing with ${path.basename(uri.fsPath)}`);
  };
}

/** Writes a commented starter recipe where the user says and opens it. */
export function newRecipe(): Command {
  return async () => {
    const folder = workspaceFolder();
    const target = await vscode.window.showSaveDialog({
      title: 'MixQ: new quantization recipe',
      defaultUri: vscode.Uri.file(path.join(folder ?? process.cwd(), 'quantize.mixq.toml')),
      filters: { 'MixQ recipe': ['mixq.toml', 'toml'] },
    });
    if (!target) return;
    let file = target.fsPath;
    if (!/\.mixq\.toml$/i.test(file)) file = file.replace(/(\.toml)?$/i, '.mixq.toml');
    if (fs.existsSync(file)) {
      void vscode.window.showErrorMessage(`MixQ: ${file} already exists; not overwritten.`);
      return;
    }
    fs.writeFileSync(file, starterRecipe(), { flag: 'wx' });
    await vscode.window.showTextDocument(vscode.Uri.file(file));
  };
}

export function cancelQuantization(ctx: Ctx): Command {
  return async () => {
    const r = ctx.client && ctx.running ? await ctx.client.sendRequest(QuantizeCancelRequest) : { cancelled: false };
    if (!r.cancelled) void vscode.window.showInformationMessage('MixQ: no quantization is running.');
  };
}
