import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as protocol from '../../server/src/protocol';
import type * as serverModuleType from '../../server/src/server';
import { serverModule } from '../helpers';

const { normalizeSettings } = serverModule<typeof serverModuleType>('server');
const { defaultServerSettings } = serverModule<typeof protocol>('protocol');

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
