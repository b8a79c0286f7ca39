/**
 * Workspace trust. A cloned repository's `.vscode/settings.json` must not point the engine at a model folder of its
 * choosing (the native parsers then read files an attacker wrote) or set how much memory and CPU it takes. So in an
 * untrusted workspace (Restricted Mode) the settings of RESTRICTED_SETTINGS come from the user's settings only —
 * VS Code already ignores their workspace values there (package.json: capabilities.untrustedWorkspaces,
 * restrictedConfigurations), and the client reads them the same way, so an older VS Code or a missed declaration
 * cannot let one through. The user is told which workspace values were ignored.
 *
 * vscode-free (unit-tested); ./config applies it.
 */

/**
 * mixq.* settings that load files or size resources, and those that send code off the machine (a workspace must not
 * point completions, with the user's code in every request, at a server of its choosing).
 */
export const RESTRICTED_SETTINGS = [
  'modelPath', 'device', 'gpus', 'devices', 'placement', 'threads', 'contextLength', 'maxTokens', 'timeCapMs',
  'maxPrefixTokens', 'maxSuffixTokens', 'backend', 'endpoint', 'remoteModel',
] as const;

/** What `WorkspaceConfiguration.inspect` reports for one setting. */
export interface InspectedSetting<T> {
  defaultValue?: T;
  globalValue?: T;
  workspaceValue?: T;
  workspaceFolderValue?: T;
}

export function isRestricted(key: string): boolean {
  return (RESTRICTED_SETTINGS as readonly string[]).includes(key);
}

/**
 * The value a setting takes: as VS Code resolves it in a trusted workspace (`resolved`), else for a restricted
 * setting the user's value, else the default, else `fallback`.
 */
export function settingValue<T>(key: string, trusted: boolean, resolved: () => T, inspected: InspectedSetting<T> | undefined, fallback: T): T {
  if (trusted || !isRestricted(key)) return resolved();
  return inspected?.globalValue ?? inspected?.defaultValue ?? fallback;
}

/** The restricted settings the workspace (or a folder of it) sets, as `mixq.KEY`: ignored while untrusted. */
export function ignoredWorkspaceSettings(section: string, inspect: (key: string) => InspectedSetting<unknown> | undefined): string[] {
  const out: string[] = [];
  for (const key of RESTRICTED_SETTINGS) {
    const i = inspect(key);
    if (i && (i.workspaceValue !== undefined || i.workspaceFolderValue !== undefined)) out.push(`${section}.${key}`);
  }
  return out;
}

/** The log line / notification of Restricted Mode; undefined in a trusted workspace. */
export function restrictedModeMessage(trusted: boolean, ignored: readonly string[]): string | undefined {
  if (trusted) return undefined;
  const base = 'Restricted Mode: this workspace is not trusted, so MixQ uses only your user settings for the model path, devices, limits and remote server';
  if (ignored.length === 0) return `${base}.`;
  return `${base}; this workspace's ${ignored.join(', ')} ${ignored.length === 1 ? 'is' : 'are'} ignored until you trust it.`;
}
