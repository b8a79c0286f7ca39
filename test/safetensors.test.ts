// The TS safetensors reader used by `mixq ppl`: valid files read exactly, broken ones fail naming file and tensor.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';

import type * as stModule from '../server/src/cli/safetensors';
import { needsFixtures, serverModule, sharedFixtures } from './helpers';

const { readSafetensorsTensor, SafetensorsError } = serverModule<typeof stModule>('cli/safetensors');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-st-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Writes a safetensors file from a header object and raw data bytes; returns its path. */
function write(name: string, header: unknown, data: Buffer, headerLenOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

const ids = Int32Array.from([5, -1, 70000, 2147483647, 0]);
const idsBytes = Buffer.from(ids.buffer);

test('reads an int32 tensor exactly, at an unaligned offset, next to other tensors', () => {
  const f32 = Buffer.from(Float32Array.from([1.5, -2]).buffer);
  // 3 padding bytes first: the ids start at an offset that is not a multiple of 4 in the file.
  const file = write(
    'ok.safetensors',
    {
      __metadata__: { format: 'pt' },
      x: { dtype: 'F32', shape: [2], data_offsets: [3, 11] },
      ids: { dtype: 'I32', shape: [5], data_offsets: [11, 31] },
    },
    Buffer.concat([Buffer.from([0, 0, 0]), f32, idsBytes]),
  );
  const t = readSafetensorsTensor(file, 'ids', 'I32');
  assert.deepEqual(t.shape, [5]);
  assert.equal(t.dtype, 'I32');
  assert.deepEqual(Array.from(t.data as Int32Array), Array.from(ids));
  assert.deepEqual(Array.from(readSafetensorsTensor(file, 'x').data as Float32Array), [1.5, -2]);
});

const broken: [string, () => string, RegExp][] = [
  ['missing file', () => path.join(dir, 'nope.safetensors'), /nope\.safetensors: cannot read \(ENOENT\)/],
  ['shorter than the header length', () => { const f = path.join(dir, 'short.safetensors'); fs.writeFileSync(f, Buffer.from([1, 2])); return f; }, /truncated/],
  ['header length beyond the file', () => write('hdr.safetensors', { ids: { dtype: 'I32', shape: [5], data_offsets: [0, 20] } }, idsBytes, 1000000n), /header length 1000000 exceeds the file/],
  ['header not JSON', () => { const f = write('json.safetensors', {}, Buffer.alloc(0)); const b = fs.readFileSync(f); b.write('[', 8); fs.writeFileSync(f, b); return f; }, /header is not valid JSON/],
  ['tensor missing', () => write('missing.safetensors', { other: { dtype: 'I32', shape: [5], data_offsets: [0, 20] } }, idsBytes), /no tensor "ids" \(tensors: other\)/],
  ['unknown dtype', () => write('dtype.safetensors', { ids: { dtype: 'Q4', shape: [5], data_offsets: [0, 20] } }, idsBytes), /tensor "ids": unknown dtype "Q4"/],
  ['wrong dtype', () => write('f32.safetensors', { ids: { dtype: 'F32', shape: [5], data_offsets: [0, 20] } }, idsBytes), /tensor "ids": dtype F32, expected I32/],
  ['offsets beyond the data (truncated)', () => write('trunc.safetensors', { ids: { dtype: 'I32', shape: [5], data_offsets: [0, 20] } }, idsBytes.subarray(0, 12)), /data_offsets \[0, 20\] go beyond the file's data region \(12 bytes/],
  ['shape disagrees with offsets', () => write('shape.safetensors', { ids: { dtype: 'I32', shape: [6], data_offsets: [0, 20] } }, idsBytes), /shape \[6\] × I32 needs 24 bytes, data_offsets span 20/],
  ['negative shape', () => write('neg.safetensors', { ids: { dtype: 'I32', shape: [-5], data_offsets: [0, 20] } }, idsBytes), /not a list of non-negative integers/],
  ['reversed offsets', () => write('rev.safetensors', { ids: { dtype: 'I32', shape: [5], data_offsets: [20, 0] } }, idsBytes), /not \[begin, end\]/],
];

for (const [what, make, message] of broken) {
  test(`broken file: ${what}`, () => {
    const file = make();
    assert.throws(
      () => readSafetensorsTensor(file, 'ids', 'I32'),
      (e: Error) => e instanceof SafetensorsError && message.test(e.message) && e.message.includes(path.basename(file)),
    );
  });
}

test('the fixtures valid_ids.safetensors holds an int32 stream long enough for 120 windows of 512', { skip: needsFixtures }, () => {
  const t = readSafetensorsTensor(path.join(sharedFixtures!, 'valid_ids.safetensors'), 'ids', 'I32');
  assert.equal(t.shape.length, 1);
  const data = t.data as Int32Array;
  assert.ok(data.length >= 120 * 512, `${data.length} tokens`);
  assert.ok(data.every((id) => id >= 0 && id < 8192));
});
