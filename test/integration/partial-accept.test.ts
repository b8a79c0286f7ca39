/** Partial accept over JSON-RPC with the real server and the fixture model: the cache follows the accepted text. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as protocol from '#protocol';
import { tinyModelDir } from '../helpers';
import { ghostText, needsAddon, TestServer } from './lsp-client';

const { PartialAcceptNotification } = protocol;
const SETTINGS: Partial<protocol.ServerSettings> = {
  modelPath: tinyModelDir, device: 'cpu', maxTokens: 48, timeCapMs: 20_000, debounceMs: 30, contextFromOpenFiles: false, prefetch: true,
};

let server: TestServer;
before(async () => {
  if (needsAddon) return;
  server = await TestServer.start(SETTINGS);
  await server.waitFor((s) => s.state === 'ready' || s.state === 'error');
});
after(async () => {
  await server?.stop();
});

test('a word accepted, then a line: the server serves the rest as the exact cache entry of each new state', { skip: needsAddon }, async () => {
  const uri = 'file:///work/partial.py';
  const text = 'import os\n\n\ndef list_python_files(root):\n    ';
  await server.open(uri, text);
  const shown = ghostText(await server.complete(uri, text.length, false));
  const word = /^\w+/.exec(shown)?.[0] ?? '';
  assert.ok(word.length > 0 && word.length < shown.length, JSON.stringify(shown));

  // VS Code's acceptNextWord inserts the word; MixQ's command then tells the server.
  let doc = text + word;
  let version = await server.setText(uri, doc);
  await server.conn.sendNotification(PartialAcceptNotification, { uri, version, offset: doc.length, acceptedText: word, kind: 'word' });
  const rest = ghostText(await server.complete(uri, doc.length, false));
  assert.equal(rest, shown.slice(word.length));
  assert.equal((await server.status()).last?.stop, 'cache_exact', 'the acceptance made the rest an exact entry');

  // The rest of the line.
  const nl = rest.indexOf('\n');
  const line = nl >= 0 ? rest.slice(0, nl + 1) : rest;
  doc += line;
  version = await server.setText(uri, doc);
  await server.conn.sendNotification(PartialAcceptNotification, { uri, version, offset: doc.length, acceptedText: line, kind: 'line' });
  if (line.length < rest.length) {
    assert.equal(ghostText(await server.complete(uri, doc.length, false)), rest.slice(line.length));
    assert.equal((await server.status()).last?.stop, 'cache_exact');
  }
});
