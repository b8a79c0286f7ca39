/**
 * The pieces of the remote backend and of `mixq serve` that need no model: request checking with reasons, stop
 * sequences over streamed text, the SSE parser, endpoint URLs, text budgets, the bind address.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as remoteModule from '../../server/src/completion/remote';
import type * as requestModule from '../../server/src/serve/request';
import type * as serveModule from '../../server/src/cli/serve';
import type * as templatesModule from '../../server/src/completion/templates';
import { serverModule } from '../helpers';

const { parseCompletionsRequest, StopScanner, HttpError } = serverModule<typeof requestModule>('serve/request');
const { SseParser, endpointBase, tailLines, headLines, fimPromptText } = serverModule<typeof remoteModule>('completion/remote');
const { TEMPLATES } = serverModule<typeof templatesModule>('completion/templates');
const { bindAddress, isLoopback } = serverModule<typeof serveModule>('cli/serve');

function reason(body: unknown): string {
  try {
    parseCompletionsRequest(body);
  } catch (e) {
    assert.ok(e instanceof HttpError, `an HttpError, got ${String(e)}`);
    assert.equal(e.status, 400);
    return e.message;
  }
  return 'accepted';
}

test('completions requests: defaults as OpenAI, every bad field refused with a reason naming it', () => {
  const r = parseCompletionsRequest({ prompt: 'def f():', suffix: '\n', stop: '\n\n' });
  assert.deepEqual(r, { model: undefined, prompt: 'def f():', suffix: '\n', maxTokens: 16, temperature: 1, topP: 1, seed: undefined, stop: ['\n\n'], stream: false, ignoreEos: false });
  assert.equal(parseCompletionsRequest({ prompt: ['one'], max_tokens: 5, temperature: 0, stream: true }).prompt, 'one');
  assert.equal(reason([1, 2]), 'the body must be a JSON object');
  assert.equal(reason({}), 'prompt is missing');
  assert.equal(reason({ prompt: [1, 2, 3] }), 'prompt must be a string (token-id prompts are not supported)');
  assert.equal(reason({ prompt: ['a', 'b'] }), 'prompt holds 2 prompts; send one per request');
  assert.equal(reason({ prompt: 'x', suffix: 3 }), 'suffix must be a string');
  assert.equal(reason({ prompt: 'x', max_tokens: 0 }), 'max_tokens must be from 1 to 1024, got 0');
  assert.equal(reason({ prompt: 'x', max_tokens: 2.5 }), 'max_tokens must be an integer, got 2.5');
  assert.equal(reason({ prompt: 'x', max_tokens: '9' }), 'max_tokens must be a number, got "9"');
  assert.equal(reason({ prompt: 'x', temperature: 3 }), 'temperature must be from 0 to 2, got 3');
  assert.equal(reason({ prompt: 'x', stop: [''] }), 'stop has an empty sequence');
  assert.equal(reason({ prompt: 'x', stop: Array(17).fill('a') }), 'stop has 17 sequences, at most 16');
  assert.equal(reason({ prompt: 'x', stop: [1] }), 'stop must be a string or an array of strings');
  assert.equal(reason({ prompt: 'x', n: 2 }), 'n must be 1 (one completion per request)');
  assert.equal(reason({ prompt: 'x', echo: true }), 'echo is not supported');
  assert.equal(reason({ prompt: 'x', logprobs: 5 }), 'logprobs is not supported');
  assert.equal(reason({ prompt: 'x', stream: 'yes' }), 'stream must be true or false');
  assert.equal(reason({ prompt: 'x', seed: -1 }), 'seed must be from 0 to 4294967295, got -1');
  assert.equal(reason({ prompt: 'x', user: 'someone', presence_penalty: 0 }), 'accepted', 'unknown fields are ignored');
  assert.equal(JSON.parse(new HttpError(429, 'busy').body()).error.type, 'rate_limit_error');
});

test('stop sequences over streamed text: nothing after the stop is sent, text that may start one is held back', () => {
  const s = new StopScanner(['\n\n', 'END']);
  const sent = ['ab', 'c\n', 'd E', 'N', 'x\n', '\nmore'].map((c) => s.push(c));
  // The longest stop has 3 characters: the last 2 wait until they cannot start one.
  assert.deepEqual(sent, ['', 'ab', 'c\nd', ' ', 'EN', 'x']);
  assert.equal(sent.join(''), 'abc\nd ENx', 'everything before the first stop, nothing after it');
  assert.ok(s.stopped);
  assert.equal(s.flush(), '');
  const none = new StopScanner([]);
  assert.equal(none.push('abc'), 'abc');
  const rest = new StopScanner(['###']);
  assert.equal(rest.push('a#') + rest.push('#'), 'a');
  assert.equal(rest.flush(), '##', 'the held-back text comes out when generation ends without the stop');
});

test('SSE: events split across reads, CRLF, comments and multi-line data', () => {
  const p = new SseParser();
  assert.deepEqual(p.push('data: {"a"'), []);
  assert.deepEqual(p.push(':1}\n\n: keep-alive\n\ndata: x\r\n'), ['{"a":1}']);
  assert.deepEqual(p.push('data: y\r\n\r\ndata:[DONE]\n\n'), ['x\ny', '[DONE]']);
});

test('endpoints: http(s) only, /v1 optional, no credentials in the URL', () => {
  assert.equal(endpointBase('http://127.0.0.1:8090'), 'http://127.0.0.1:8090');
  assert.equal(endpointBase('http://gpu:8000/v1/'), 'http://gpu:8000');
  assert.equal(endpointBase(' https://host/proxy/v1 '), 'https://host/proxy');
  assert.throws(() => endpointBase('gpu:8000'), /must be an http/);
  assert.throws(() => endpointBase('not a url'), /is not a URL/);
  assert.throws(() => endpointBase('http://user:secret@host'), /must not carry credentials/);
});

test('remote prompt budgets keep whole lines (the cursor line always)', () => {
  assert.equal(tailLines('aaa\nbbb\nccc', 100), 'aaa\nbbb\nccc');
  assert.equal(tailLines('aaa\nbbb\nccc', 8), 'bbb\nccc');
  assert.equal(tailLines('aaa\nbbbbbbbbbb', 4), 'bbbb');
  assert.equal(headLines('aaa\nbbb\nccc', 9), 'aaa\nbbb\n');
  assert.equal(headLines('aaaaaaaa', 3), 'aaa');
});

test('mixq serve binds loopback unless --host says otherwise, and warns for a non-loopback --host', () => {
  assert.deepEqual(bindAddress(undefined), { host: '127.0.0.1' });
  assert.deepEqual(bindAddress('localhost'), { host: 'localhost' });
  assert.deepEqual(bindAddress('::1'), { host: '::1' });
  for (const host of ['0.0.0.0', '::', '192.168.1.5', 'gpu-box', '::ffff:10.0.0.1']) {
    assert.equal(isLoopback(host), false, host);
    assert.match(bindAddress(host).warning ?? '', /other machines can reach/);
  }
  assert.ok(isLoopback('127.0.0.2') && isLoopback('[::1]') && isLoopback('::ffff:127.0.0.1'));
  assert.throws(() => bindAddress(' '), /empty address/);
});

test('FIM laid out as text for servers without suffix: marker strings, BOS left to the server', () => {
  assert.equal(fimPromptText(TEMPLATES['starcoder-psm'], 'def f(', '):'), '<fim_prefix>def f(<fim_suffix>):<fim_middle>');
  assert.equal(fimPromptText(TEMPLATES.codellama, 'a', 'b'), '<PRE> a <SUF>b <MID>');
  assert.equal(fimPromptText(TEMPLATES.codestral, 'a', 'b'), '[SUFFIX]b[PREFIX]a');
  assert.equal(fimPromptText(TEMPLATES['prefix-only'], 'a', 'b'), 'a');
});
