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

const { deviceFlags, deviceOptions } = serverModule<typeof argsModule>('cli/args');
const deviceSpecs = { model: { type: 'string', help: 'dir' }, ...deviceFlags } as const;
/** parseFlags + deviceOptions, as generate/ppl/bench run them. */
const devices = (argv: string[]): argsModule.DeviceOptions => deviceOptions(parseFlags(argv, deviceSpecs));
const deviceFails = (argv: string[], message: RegExp): void =>
  assert.throws(() => devices(argv), (e: Error) => e instanceof UsageError && message.test(e.message), argv.join(' '));

test('device flags: --device, --devices, --placement and --split reach the load options', () => {
  assert.deepEqual(devices([]), {});
  assert.deepEqual(devices(['--device', 'cuda']), { device: 'cuda' });
  for (const d of ['cpu', 'cuda', 'auto', 'cuda:1']) assert.deepEqual(devices([`--device=${d}`]), { device: d });
  assert.deepEqual(devices(['--devices', 'cpu:0,cpu:1,cpu:2']), { devices: ['cpu:0', 'cpu:1', 'cpu:2'] });
  assert.deepEqual(devices(['--devices', 'cuda:0, cuda:1', '--placement', 'expert']), { devices: ['cuda:0', 'cuda:1'], placement: 'expert' });
  assert.deepEqual(
    devices(['--devices', 'cpu:0,cpu:1', '--placement', 'layer', '--split', '3,1.5']),
    { devices: ['cpu:0', 'cpu:1'], placement: 'layer', split: [3, 1.5] },
  );
  assert.deepEqual(devices(['--devices', 'cpu:0,cpu:1', '--split', '1,1']), { devices: ['cpu:0', 'cpu:1'], split: [1, 1] });
});

test('device flags: bad values are usage errors naming the flag', () => {
  deviceFails(['--device', 'tpu'], /--device: "tpu" is not cpu, cuda, cuda:N or auto/);
  deviceFails(['--device', 'cuda:x'], /--device: "cuda:x"/);
  deviceFails(['--devices', 'cpu:0,,cpu:1'], /--devices: .* empty entry/);
  deviceFails(['--devices', 'cpu0'], /--devices: "cpu0" is not a device like cpu:0/);
  deviceFails(['--devices', 'gpu:0'], /--devices: "gpu:0"/);
  deviceFails(['--devices', 'cpu:0,cpu:0'], /--devices: cpu:0 is named twice/);
  deviceFails(['--device', 'cpu', '--devices', 'cpu:0,cpu:1'], /one of --device, --devices/);
  deviceFails(['--devices', 'cpu:0,cpu:1', '--placement', 'row'], /--placement: "row" is not layer or expert/);
  deviceFails(['--devices', 'cpu:0,cpu:1', '--split', '1,x'], /--split: "1,x" is not a comma-separated list of numbers/);
  deviceFails(['--devices', 'cpu:0,cpu:1', '--split', '1,0'], /--split: 0 is not a proportion > 0/);
  deviceFails(['--devices', 'cpu:0,cpu:1', '--split', '1,-2'], /--split: -2 is not a proportion > 0/);
  deviceFails(['--devices', 'cpu:0,cpu:1', '--split', '1,1,1'], /--split: 3 proportion\(s\) for 2 device\(s\)/);
  deviceFails(['--devices', 'cpu:0,cpu:1', '--split', '1'], /--split: 1 proportion\(s\) for 2/);
  deviceFails(['--split', '1,1'], /--split needs --devices/);
  deviceFails(['--devices', 'cpu:0,cpu:1', '--placement', 'expert', '--split', '1,1'], /--split applies to --placement layer only/);
  deviceFails(['--devices'], /--devices needs a value/);
});
