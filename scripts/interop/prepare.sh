#!/usr/bin/env bash
# Prepares the interoperability check (scripts/interop/README.md) on a machine with Node and the built addon:
#   1. quantizes the fixture model twice (RTN g128, AWQ g128) into .interop/{rtn-g128,awq-g128};
#   2. records what the MixQ engine computes on them (.interop/pack/ours.json, engine_side.mjs);
#   3. packs what the Python side needs into .interop/pack (checkpoints as one .tar.xz: the working tree plus
#      carried files must stay under 64 MiB for the GPU machine).
# Then run check_awq_checkpoint.py where torch + transformers are (README.md gives the command).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
fixtures="$repo/../shared/fixtures"
if [ ! -f "$fixtures/valid_ids.safetensors" ]; then
  echo "SKIPPED: ../shared/fixtures not found"
  exit 77
fi
cd "$repo"
grep -qx '/.interop/' .git/info/exclude 2>/dev/null || echo '/.interop/' >> .git/info/exclude
mkdir -p .interop/pack
[ -d .interop/rtn-g128 ] || node bin/mixq.js quantize models/mixq-tiny-code .interop/rtn-g128 --method rtn --group-size 128 --json
[ -d .interop/awq-g128 ] || node bin/mixq.js quantize models/mixq-tiny-code .interop/awq-g128 \
  --calib "$fixtures/calibration-code.jsonl" --samples 8 --seq-len 128 --json
node scripts/interop/engine_side.mjs --out .interop/pack/ours.json --threads "${THREADS:-2}" \
  rtn-g128=.interop/rtn-g128 awq-g128=.interop/awq-g128
(cd .interop && tar -cf - rtn-g128 awq-g128 | xz -6 -T1 > pack/ckpts.tar.xz && sha256sum rtn-g128/* awq-g128/* > pack/ckpts.sha256)
cp "$fixtures/valid_ids.safetensors" "$fixtures/reference-figures.json" .interop/pack/
du -sh .interop/pack
