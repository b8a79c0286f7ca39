// The CLI flag parser: every malformed command line is an error with a message naming the flag.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as argsModule from '../server/src/cli/args';
import { serverModule } from './helpers';

const { parseFlags, UsageError } = serverModule<typeof argsModule>('cli/args');

const specs = {
  model: { type: 'string', help: 'dir', required: true },
  maxTokens: { type: 'int', help: 'n', min: 0 },
  topP: { type: 'number', help: 'p', min: 1e-6, max: 1 },
  ids: { type: 'intList', help: 'ids' },
  json: { type: 'boolean', help: 'json' },
} as const;

const fails = (argv: string[], message: RegExp): void =>
  assert.throws(() => parseFlags(argv, specs), (e: Error) => e instanceof UsageError && message.test(e.message), argv.join(' '));

test('parses values, = syntax, booleans and kebab-case names', () => {
  const f = parseFlags(['--model', 'm', '--max-tokens=32', '--top-p', '0.9', '--ids', '1, 2,3', '--json'], specs);
  assert.deepEqual(
    { model: f.model, maxTokens: f.maxTokens, topP: f.topP, ids: f.ids, json: f.json, help: f.help },
    { model: 'm', maxTokens: 32, topP: 0.9, ids: [1, 2, 3], json: true, help: false },
  );
  assert.equal(parseFlags(['--model', 'm'], specs).json, undefined);
  assert.equal(parseFlags(['--model=m', '--json=false'], specs).json, false);
});

test('rejects unknown flags, missing values, positional arguments and repeats', () => {
  fails(['--model', 'm', '--bogus'], /unknown flag --bogus/);
  fails(['--model'], /--model needs a value/);
  fails(['--model', '--json'], /--model needs a value/);
  fails(['--model='], /--model needs a value/);
  fails(['--model', 'm', 'extra'], /unexpected argument "extra"/);
  fails(['--model', 'm', '--model', 'n'], /--model given twice/);
  fails(['--json'], /--model is required/);
  fails(['--model', 'm', '--json=yes'], /expected true or false/);
});

test('rejects malformed and out-of-range numbers', () => {
  fails(['--model', 'm', '--max-tokens', 'ten'], /--max-tokens: "ten" is not a number/);
  fails(['--model', 'm', '--max-tokens', '1.5'], /not an integer/);
  fails(['--model', 'm', '--max-tokens', '-1'], /below the minimum 0/);
  fails(['--model', 'm', '--top-p', '1.5'], /above the maximum 1/);
  fails(['--model', 'm', '--max-tokens', ''], /not a number/);
  fails(['--model', 'm', '--ids', '1,,2'], /--ids: .* not a comma-separated list/);
  fails(['--model', 'm', '--ids', '1,-2'], /not a comma-separated list/);
});

test('--help skips the required-flag check', () => {
  assert.equal(parseFlags(['--help'], specs).help, true);
});
