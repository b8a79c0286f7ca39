/** The server's model host (issue 15): a load that never ends does not hold up the next one forever. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TextDocuments } from 'vscode-languageserver/node';
import { TextDocument } from 'vscode-languageserver-textdocument';

import { defaultServerSettings } from '#protocol';
import type * as contextModule from '../../server/src/completion/context';
import type * as modelModule from '../../server/src/completion/model';
import type * as serverModuleType from '../../server/src/server';
import { serverModule } from '../helpers';
import { FakeModel } from './fake-model';

const { ModelHost } = serverModule<typeof serverModuleType>('server');
const { RecentDocuments } = serverModule<typeof contextModule>('completion/context');

test('a load stuck on a hung file system is overtaken by a newer one after the wait; its late result is dropped', async () => {
  const logs: string[] = [];
  let releaseStuck!: (m: FakeModel) => void;
  let stuckDisposed = false;
  const open = ((dir: string) => {
    if (dir.endsWith('stuck')) {
      return new Promise((resolve) => {
        releaseStuck = (m) => {
          m.dispose = () => { stuckDisposed = true; };
          resolve(m);
        };
      });
    }
    return Promise.resolve(new FakeModel());
  }) as unknown as typeof modelModule.openCompletionModel;
  const host = new ModelHost(new TextDocuments(TextDocument), new RecentDocuments(), () => {}, (m) => logs.push(m), () => undefined, open, 200);

  void host.load({ ...defaultServerSettings, modelPath: '/models/stuck' });
  await new Promise((r) => setTimeout(r, 20)); // the stuck load has started (a queued one would just be skipped)
  assert.equal(host.state, 'loading');
  const t0 = Date.now();
  await host.load({ ...defaultServerSettings, modelPath: '/models/good' });
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(host.state, 'ready', host.message);
  assert.ok(logs.some((l) => /still running after 200 ms; starting the newer one anyway/.test(l)), logs.join('\n'));

  // The stuck load finishes at last: what it loaded is disposed, the newer model stays.
  releaseStuck(new FakeModel());
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(stuckDisposed, 'the late model was disposed');
  assert.equal(host.state, 'ready');
  assert.equal(host.model?.path, '/fake');
  await host.shutdown();
});
