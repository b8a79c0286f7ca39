import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { defaultServerSettings } from '#protocol';
import type * as protocol from '#protocol';
import type * as serverModuleType from '../../server/src/server';
import { repoRoot, serverModule } from '../helpers';

const { loadOptions, normalizeSettings } = serverModule<typeof serverModuleType>('server');

test('settings from the client are merged over the defaults; values of the wrong type are ignored', () => {
  const s = normalizeSettings(defaultServerSettings, {
    modelPath: '/m', maxTokens: 32, gpus: [0, 1], stopSequences: ['\n\n'],
    // Untrusted user settings: wrong types must not reach the engine.
    debounceMs: 'fast' as unknown as number, contextFromOpenFiles: 1 as unknown as boolean, device: null as unknown as 'cpu',
  });
  assert.equal(s.modelPath, '/m');
  assert.equal(s.maxTokens, 32);
  assert.deepEqual(s.gpus, [0, 1]);
  assert.deepEqual(s.stopSequences, ['\n\n']);
  assert.equal(s.debounceMs, defaultServerSettings.debounceMs);
  assert.equal(s.contextFromOpenFiles, defaultServerSettings.contextFromOpenFiles);
  assert.equal(s.device, defaultServerSettings.device);
  // Unknown keys are dropped; the base is not modified.
  const t = normalizeSettings(s, { bogus: 1 } as unknown as Partial<protocol.ServerSettings>);
  assert.deepEqual(t, s);
  assert.equal(defaultServerSettings.modelPath, '');
});

test('device settings: devices, placement and gpus reach the load options; bad values are ignored', () => {
  const s = normalizeSettings(defaultServerSettings, { modelPath: '/m', devices: ['cuda:0', 'cuda:1'], placement: 'expert', gpus: [2] });
  assert.deepEqual(
    loadOptions(s),
    { device: 'auto', gpus: [2], devices: ['cuda:0', 'cuda:1'], placement: 'expert', threads: 0, contextLength: 0 },
  );
  assert.deepEqual(loadOptions(defaultServerSettings), { device: 'auto', gpus: undefined, devices: undefined, placement: 'layer', threads: 0, contextLength: 0 });
  const bad = normalizeSettings(s, {
    placement: 'rows' as 'layer', devices: ['gpu0'], gpus: [-1, 1.5] as number[], device: 'tpu' as 'cpu',
  });
  assert.deepEqual([bad.placement, bad.devices, bad.gpus, bad.device], ['expert', ['cuda:0', 'cuda:1'], [2], 'auto']);
});

test('every server setting is a mixq.* setting of the extension, with the same default', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
    contributes: { configuration: { properties: Record<string, { default: unknown }> }; commands: Array<{ command: string; title: string }> };
  };
  const props = pkg.contributes.configuration.properties;
  for (const [key, value] of Object.entries(defaultServerSettings)) {
    assert.ok(props[`mixq.${key}`], `mixq.${key} is contributed`);
    assert.deepEqual(props[`mixq.${key}`].default, value, `default of mixq.${key}`);
  }
  // The client reads each of them (config.ts), so a new server setting cannot be forgotten there.
  const configSource = fs.readFileSync(path.join(repoRoot, 'extension', 'src', 'config.ts'), 'utf8');
  for (const key of Object.keys(defaultServerSettings)) {
    if (key === 'modelPath') continue; // resolved separately (bundled model default)
    assert.match(configSource, new RegExp(`${key}: c\\.get<`), `config.ts reads mixq.${key}`);
  }
  const titles = pkg.contributes.commands.map((c) => `${c.command}`);
  for (const cmd of ['mixq.selectModel', 'mixq.restartServer', 'mixq.showLog', 'mixq.toggleCompletions']) assert.ok(titles.includes(cmd), cmd);
});
