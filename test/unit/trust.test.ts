/** Workspace trust (issue 15): the manifest's Restricted Mode declaration and the client's own rule agree. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as trustModule from '../../extension/src/trust';
import { repoRoot } from '../helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { RESTRICTED_SETTINGS, settingValue, ignoredWorkspaceSettings, restrictedModeMessage } = require(path.join(repoRoot, 'out', 'extension', 'trust')) as typeof trustModule;

const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
  capabilities: { untrustedWorkspaces: { supported: string; restrictedConfigurations: string[] } };
  contributes: { configuration: { properties: Record<string, { scope?: string }> } };
};

test('package.json: limited support in untrusted workspaces, restricting exactly the settings the client restricts', () => {
  const u = pkg.capabilities.untrustedWorkspaces;
  assert.equal(u.supported, 'limited');
  assert.deepEqual(u.restrictedConfigurations, RESTRICTED_SETTINGS.map((k) => `mixq.${k}`));
  for (const key of u.restrictedConfigurations) assert.ok(pkg.contributes.configuration.properties[key], `${key} is a contributed setting`);
  // The settings that load files or size resources are all restricted.
  for (const key of ['modelPath', 'device', 'devices', 'gpus', 'threads', 'contextLength']) {
    assert.ok((RESTRICTED_SETTINGS as readonly string[]).includes(key), key);
  }
});

test('untrusted: a restricted setting takes the user value (or the default), never the workspace value', () => {
  const inspected = { defaultValue: '', globalValue: '/home/me/models/good', workspaceValue: '/tmp/evil-model' };
  const resolved = (): string => inspected.workspaceValue; // what VS Code resolves: the workspace wins
  assert.equal(settingValue('modelPath', true, resolved, inspected, ''), '/tmp/evil-model');
  assert.equal(settingValue('modelPath', false, resolved, inspected, ''), '/home/me/models/good');
  assert.equal(settingValue('modelPath', false, resolved, { defaultValue: '', workspaceValue: '/tmp/evil' }, ''), '');
  assert.equal(settingValue('threads', false, () => 100000, { defaultValue: 0, workspaceFolderValue: 100000 }, 0), 0);
  // Unrestricted settings resolve as usual.
  assert.equal(settingValue('debounceMs', false, () => 10, { defaultValue: 75, workspaceValue: 10 }, 75), 10);
});

test('untrusted: the user is told which workspace settings are ignored', () => {
  const inspect = (key: string): { workspaceValue?: unknown } | undefined =>
    key === 'modelPath' ? { workspaceValue: '/tmp/evil' } : key === 'threads' ? { workspaceValue: 8 } : {};
  const ignored = ignoredWorkspaceSettings('mixq', inspect);
  assert.deepEqual(ignored, ['mixq.modelPath', 'mixq.threads']);
  assert.equal(restrictedModeMessage(true, ignored), undefined);
  assert.match(restrictedModeMessage(false, ignored)!, /not trusted.*only your user settings.*mixq\.modelPath, mixq\.threads are ignored/);
  assert.match(restrictedModeMessage(false, [])!, /Restricted Mode: .* only your user settings/);
});
