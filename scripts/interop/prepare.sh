#!/usr/bin/env bash
# Prepares the interoperability check (scripts/interop/README.md) on a machine with Node and the built addon:
#   scripts/interop/prepare.sh [GROUP]      GROUP = 128 (default) or 64 or 32
#   1. quantizes the fixture model twice (RTN and AWQ, group GROUP) into .interop/{rtn,awq}-gGROUP;
#   2. records what the MixQ engine computes on them (PACK/ours.json, engine_side.mjs);
#   3. packs what the Python side needs into PACK = .interop/pack (GROUP 128) or .interop/packGROUP: the
#      checkpoints as one .tar.xz, since the working tree plus carried files must stay under 64 MiB for the
#      GPU machine (two checkpoints fit, four do not).
# Then run check_awq_checkpoint.py where torch + transformers are (README.md gives the command).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
fixtures="$repo/../shared/fixtures"
if [ ! -f "$fixtures/valid_ids.safetensors" ]; then
  echo "SKIPPED: ../shared/fixtures not found"
  exit 77
fi
cd "$repo"
group="${1:-128}"
pack=".interop/pack"
[ "$group" = 128 ] || pack=".interop/pack$group"
rtn="rtn-g$group"
awq="awq-g$group"
grep -qx '/.interop/' .git/info/exclude 2>/dev/null || echo '/.interop/' >> .git/info/exclude
mkdir -p "$pack"
[ -d ".interop/$rtn" ] || node bin/mixq.js quantize models/mixq-tiny-code ".interop/$rtn" --method rtn --group-size "$group" --json
[ -d ".interop/$awq" ] || node bin/mixq.js quantize models/mixq-tiny-code ".interop/$awq" --group-size "$group" \
  --calib "$fixtures/calibration-code.jsonl" --samples 8 --seq-len 128 --json
node scripts/interop/engine_side.mjs --out "$pack/ours.json" --threads "${THREADS:-2}" \
  "$rtn=.interop/$rtn" "$awq=.interop/$awq"
(cd .interop && tar -cf - "$rtn" "$awq" | xz -6 -T1 > "../$pack/ckpts.tar.xz" && sha256sum "$rtn"/* "$awq"/* > "../$pack/ckpts.sha256")
cp "$fixtures/valid_ids.safetensors" "$fixtures/reference-figures.json" "$pack/"
du -sh "$pack"
