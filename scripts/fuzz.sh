#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read model folders (libFuzzer, clang, ASan + UBSan) and recipes:
#   fuzz_json         the JSON parser (tree and member-by-member)
#   fuzz_safetensors  a whole safetensors file through SafetensorsFile
#   fuzz_index        model.safetensors.index.json through WeightStore::open
#   fuzz_config       config.json through load_model_config + the checkpoint consistency check
#   fuzz_recipe       *.mixq.toml through the server's recipe parser (TypeScript: scripts/fuzz-recipe.mjs, coverage from
#                     V8's block coverage instead of clang's; needs the tsc build in out/, which npm ci makes)
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]. Builds the native targets into build-fuzz/ (CPU only), runs each
# target from a copy of its seed corpus (native/fuzz/corpus/TARGET), prints one summary line per target
# ("fuzz_json: 1234567 executions in 60 s, 0 crashes") and exits 1 if any target found a crash (its input is kept in
# build-fuzz/crashes/TARGET/ — turn it into a regression test in native/tests/test_hostile.cpp, or for fuzz_recipe into
# native/fuzz/corpus/fuzz_recipe/regression-* plus a test in test/recipe-fuzz.test.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_json fuzz_safetensors fuzz_index fuzz_config fuzz_recipe)
NATIVE=()
for t in "${TARGETS[@]}"; do [ "$t" = fuzz_recipe ] || NATIVE+=("$t"); done
if [ ${#NATIVE[@]} -gt 0 ]; then
  command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install -y clang)" >&2; exit 2; }
  JOBS="${FUZZ_BUILD_JOBS:-2}"
  GENERATOR=()
  command -v ninja >/dev/null && GENERATOR=(-G Ninja)
  cmake -S . -B build-fuzz "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DMIXQ_CUDA=OFF -DMIXQ_BUILD_TESTS=OFF -DMIXQ_FUZZ=ON \
    "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link -g" >/dev/null
  cmake --build build-fuzz -j "$JOBS" --target "${NATIVE[@]}" >/dev/null
fi
if [[ " ${TARGETS[*]} " == *" fuzz_recipe "* ]] && [ ! -f out/test/fuzz/recipeTarget.js ]; then
  echo "fuzz.sh: out/test/fuzz/recipeTarget.js not built (npm run build)" >&2
  exit 2
fi
failed=0
for t in "${TARGETS[@]}"; do
  work="build-fuzz/corpus/$t"
  crashes="build-fuzz/crashes/$t"
  rm -rf "$crashes"
  mkdir -p "$work" "$crashes"
  cp -n native/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  log="build-fuzz/$t.log"
  set +e
  if [ "$t" = fuzz_recipe ]; then
    node --max-old-space-size=2048 scripts/fuzz-recipe.mjs "$work" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
      -artifact_prefix="$crashes/" >"$log" 2>&1
  else
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "build-fuzz/native/$t" "$work" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
      -timeout=10 -max_len=65536 -print_final_stats=1 -artifact_prefix="$crashes/" >"$log" 2>&1
  fi
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  unit=edges
  [ "$t" = fuzz_recipe ] && unit='V8 block features'
  ncrash=$(find "$crashes" -type f | wc -l)
  echo "$t: $execs executions in ${SECONDS_PER_TARGET} s, coverage $cov $unit, corpus $(ls "$work" | wc -l) inputs, $ncrash crashes (exit $rc)"
  if [ "$rc" -ne 0 ] || [ "$ncrash" -ne 0 ]; then
    failed=1
    grep -m5 -E 'ERROR|runtime error|SUMMARY|deadly signal' "$log" || true
  fi
done
exit $failed
