/**
 * The `mixq.*` settings as the client reads them: what is sent to the server, and the client-only switches
 * (global enable, per-language enable).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import * as vscode from 'vscode';

import type { ServerSettings } from '#protocol';
import { ignoredWorkspaceSettings, restrictedModeMessage, settingValue } from './trust';

export const SECTION = 'mixq';

/** The model shipped in the repository; absent from the packaged .vsix (a model is chosen by the user there). */
export function bundledModelPath(extensionPath: string): string | undefined {
  const dir = path.join(extensionPath, 'models', 'mixq-tiny-code');
  return fs.existsSync(path.join(dir, 'config.json')) ? dir : undefined;
}

/** `mixq.modelPath` resolved: `~` expanded, relative paths against the first workspace folder; '' = none. */
export function resolveModelPath(raw: string, extensionPath: string): string {
  let p = raw.trim();
  if (!p) return bundledModelPath(extensionPath) ?? '';
  if (p === '~' || p.startsWith('~/')) p = path.join(os.homedir(), p.slice(1));
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  p = p.replace(/\$\{workspaceFolder\}/g, folder ?? '');
  if (!path.isAbsolute(p) && folder) p = path.join(folder, p);
  return path.resolve(p);
}

/**
 * The mixq.* section read through the workspace-trust rule (./trust): in an untrusted workspace the restricted
 * settings take the user's value, never the workspace's.
 */
function trustedSection(): { get<T>(key: string, fallback: T): T } {
  const c = vscode.workspace.getConfiguration(SECTION);
  const trusted = vscode.workspace.isTrusted;
  return { get: <T>(key: string, fallback: T): T => settingValue(key, trusted, () => c.get<T>(key, fallback), c.inspect<T>(key), fallback) };
}

/** What to tell the user about Restricted Mode (which workspace settings are ignored); undefined when trusted. */
export function restrictedModeNotice(): string | undefined {
  const c = vscode.workspace.getConfiguration(SECTION);
  return restrictedModeMessage(vscode.workspace.isTrusted, ignoredWorkspaceSettings(SECTION, (key) => c.inspect(key)));
}

export function serverSettings(extensionPath: string): Partial<ServerSettings> {
  const c = trustedSection();
  return {
    modelPath: resolveModelPath(c.get<string>('modelPath', ''), extensionPath),
    device: c.get<ServerSettings['device']>('device', 'auto'),
    gpus: c.get<number[]>('gpus', []),
    devices: c.get<string[]>('devices', []),
    placement: c.get<ServerSettings['placement']>('placement', 'layer'),
    threads: c.get<number>('threads', 0),
    contextLength: c.get<number>('contextLength', 0),
    maxTokens: c.get<number>('maxTokens', 64),
    timeCapMs: c.get<number>('timeCapMs', 3000),
    debounceMs: c.get<number>('debounceMs', 75),
    fimTemplate: c.get<ServerSettings['fimTemplate']>('fimTemplate', 'auto'),
    maxPrefixTokens: c.get<number>('maxPrefixTokens', 1024),
    maxSuffixTokens: c.get<number>('maxSuffixTokens', 256),
    stopSequences: c.get<string[]>('stopSequences', []),
    contextFromOpenFiles: c.get<boolean>('contextFromOpenFiles', true),
    prefetch: c.get<boolean>('prefetch', true),
    alternatives: c.get<number>('alternatives', 3),
    backend: c.get<ServerSettings['backend']>('backend', 'local'),
    endpoint: c.get<string>('endpoint', 'http://127.0.0.1:8090'),
    remoteModel: c.get<string>('remoteModel', ''),
  };
}

export function completionsEnabled(): boolean {
  return vscode.workspace.getConfiguration(SECTION).get<boolean>('enable', true);
}

/** `mixq.languages`: language id → enabled; `*` is the default for languages not listed. */
export function languageEnabled(languageId: string): boolean {
  const map = vscode.workspace.getConfiguration(SECTION).get<Record<string, boolean>>('languages', {});
  if (Object.prototype.hasOwnProperty.call(map, languageId)) return map[languageId] !== false;
  return map['*'] !== false;
}
