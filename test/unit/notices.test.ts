/** The model-state notices (extension/src/noticeState.ts): replaced or cleared when the state changes. */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';

import type * as noticeModule from '../../extension/src/noticeState';
import type * as protocol from '#protocol';
import { repoRoot } from '../helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { modelNotice, NoticeState } = require(path.join(repoRoot, 'out', 'extension', 'noticeState')) as typeof noticeModule;

const status = (state: protocol.ServerState, message?: string): protocol.ServerStatus => ({
  state, message, activeGenerations: 0, pendingRequests: 0, rssBytes: 0, pid: 1,
  counters: { requests: 0, completed: 0, empty: 0, cacheHits: 0, cancelled: 0, cancelledWaiting: 0, cancelledGenerating: 0, staleVersion: 0, errors: 0, evaluatedTokens: 0, maxCancelToStopMs: 0, prefetched: 0, prefetchHits: 0 },
});

test('no model → a notice with Select Model…; loading and ready clear it', () => {
  const notices = new NoticeState();
  const shown = notices.next(modelNotice(status('noModel')));
  assert.equal(shown.close, false);
  assert.match(shown.show!.message, /no model configured.*\[Select Model…\]\(command:mixq\.selectModel\)/);
  // The same state again (a status refresh): kept, not shown twice.
  assert.deepEqual(notices.next(modelNotice(status('noModel'))), { close: false });
  assert.deepEqual(notices.next(modelNotice(status('loading'))), { close: true });
  assert.deepEqual(notices.next(modelNotice(status('ready'))), { close: false });
  assert.equal(notices.current, undefined);
});

test('an error replaces the no-model notice; another error replaces it; ready clears it', () => {
  const notices = new NoticeState();
  notices.next(modelNotice(status('noModel')));
  const failed = notices.next(modelNotice(status('error', 'Could not load model /m: not found')));
  assert.equal(failed.close, true);
  assert.equal(failed.show?.severity, 'error');
  assert.match(failed.show!.message, /not found\. Completions are off/);
  const other = notices.next(modelNotice(status('error', 'Could not load model /n: bad config')));
  assert.deepEqual([other.close, other.show?.key], [true, 'error:Could not load model /n: bad config']);
  assert.deepEqual(notices.next(modelNotice(status('ready'))), { close: true });
});

test('a notice the user closed stays closed while its state lasts, and comes back after a change', () => {
  const notices = new NoticeState();
  const first = notices.next(modelNotice(status('noModel')));
  notices.dismissed(first.show!.key);
  assert.deepEqual(notices.next(modelNotice(status('noModel'))), { close: false });
  notices.next(modelNotice(status('ready')));
  assert.ok(notices.next(modelNotice(status('noModel'))).show, 'no model again later: shown again');
});
