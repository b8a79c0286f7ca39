// Writes the lab's inputs into .lab/ (git-ignored; carry it to the GPU machine): the calibration ids exactly as
// `mixq quantize --calib ../shared/fixtures/calibration-code.jsonl --samples N --seed S` builds them, and a copy
// of the held-out stream. Run from the repo root after `npm install`: node scripts/awq-lab/dump_calib.js
const fs = require('fs');
const path = require('path');
const { MixqTokenizer } = require('../../out/server/tokenizer.js');
const { buildCalibration, readCalibrationDocuments } = require('../../out/server/cli/calibration.js');
const shared = path.join(__dirname, '..', '..', '..', 'shared', 'fixtures');
fs.mkdirSync('.lab', { recursive: true });
fs.copyFileSync(path.join(shared, 'valid_ids.safetensors'), '.lab/valid_ids.safetensors');
const tok = MixqTokenizer.load('models/mixq-tiny-code');
const docs = readCalibrationDocuments(path.join(shared, 'calibration-code.jsonl'));
for (const [samples, seed] of [[64, 0], [128, 0], [64, 1], [64, 2]]) {
  const set = buildCalibration(tok, docs, { samples, seqLen: 512, seed });
  const name = `.lab/calib_${samples}x512${seed ? '_s' + seed : ''}.i32`;
  fs.writeFileSync(name, Buffer.from(set.ids.buffer, set.ids.byteOffset, set.ids.byteLength));
  console.log(name, set.ids.length, 'tokens from', set.documentsUsed, 'of', set.documents, 'documents');
}
