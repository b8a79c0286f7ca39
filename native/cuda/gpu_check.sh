#!/usr/bin/env bash
# Builds the CUDA backend, its tests and the benchmarks for the GPU at hand, runs them, and keeps the logs.
#   native/cuda/gpu_check.sh OUT_DIR [ARCH] [BENCH_ARGS...]   (ARCH default 90a-real: H100/H200)
# Fixtures: ../shared/fixtures beside the checkout, else a copy carried in .gl/fixtures (linked there).
# GPU_CHECK_QUICK=1: the tests, the GEMM part of cuda_bench, five model benches (three Mixtral, two Qwen3) and the
# placement benches only (no kernel sweep, no sanitizer) — a check that fits one short device call.
# Writes OUT_DIR/{env.txt,build.log,ctest.log,test_*.log,sanitizer.log,bench.json,bench.txt,mixq_bench_*.json}.
# Exit status: that of the CUDA ctest run.
set -u -o pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [ARCH]}
arch=${2:-90a-real}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build-gpu
mkdir -p "$out"
if [ ! -d "$root/../shared/fixtures" ] && [ -d "$root/.gl/fixtures" ]; then
  mkdir -p "$root/../shared" && ln -sfn "$root/.gl/fixtures" "$root/../shared/fixtures"
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; nvcc --version | tail -2; } \
  >"$out/env.txt" 2>&1
targets="test_cuda_device test_cuda_seed_bug test_cuda_rms_norm test_cuda_moe_align test_cuda_gemv_w4a16 test_cuda_gemm_w4a16 test_cuda_attention cuda_bench test_backend_ops
         test_gpu_model test_placement mixq_bench"
gen=""; command -v ninja >/dev/null && gen="-G Ninja"
if ! { cmake -S "$root" -B "$build" $gen -DMIXQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$build" -j"$(nproc)" --target $targets; } >"$out/build.log" 2>&1; then
  grep -E "error" "$out/build.log" | head -30
  tail -20 "$out/build.log"
  exit 1
fi
cd "$build/native"
ctest -L cuda -V >"$out/ctest.log" 2>&1
status=$?
grep -E "Test +#|tests passed|FAIL" "$out/ctest.log"
export MIXQ_CHECK_DEVICES=1
for t in test_backend_ops test_gpu_model test_placement; do
  timeout 300 "./$t" >"$out/$t.log" 2>&1
  echo "$t exit $?: $(tail -1 "$out/$t.log")"
  grep -E "^FAIL" "$out/$t.log" | head -20
done
grep -E "^ok .*(cuda|logical|greedy|ppl)" "$out/test_gpu_model.log" | head -20
# cuBLAS (the prefill GEMM's f16 ceiling) is loaded at run time: the toolkit's, else the one PyTorch's wheels carry.
cublas_dir=$(python3 -c "import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], 'lib'))" 2>/dev/null)
quick=${GPU_CHECK_QUICK:-0}
bench_args=""; [ "$quick" = 1 ] && bench_args="--quick"
LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:${cublas_dir}" timeout 300 ./cuda_bench $bench_args >"$out/bench.json" 2>"$out/bench.txt"
echo "cuda_bench exit $?"
grep -E "^(copy|cuBLAS|gemm_w4a16|moe grouped|attention|empty kernel)" "$out/bench.txt"
# Random AWQ g128 weights of the real shapes on the GPU, all layers: Mixtral-8x7B (32 layers) decode after 128 and
# after 4096 tokens of context, prefill of 128 and 2048, one profiled decode run (per-op breakdown); Qwen3-Coder-30B-A3B
# (48 layers, 128 experts top-8) decode after 512, prefill of 2048, and in the full mode context 4096 and a profile.
bench() {  # NAME SHAPE ARGS...   SHAPE: mixtral | qwen3
  local name=$1 shape=$2; shift 2
  local model="--synthetic mixtral-8x7b --layers 32"
  [ "$shape" = qwen3 ] && model="--synthetic qwen3-coder-30b-a3b --layers 48"
  timeout 240 ./mixq_bench $model --weights awq --device cuda --memcpy-mib 64 "$@" >"$out/mixq_bench_$name.json" 2>&1
  echo "mixq_bench $name exit $?: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ('prefillTokens','prefillTokensPerSec','decodeTokens','decodeTokensPerSec','decodeStepMode','decodeMsPerLayer','decodeHeadMs','weightBytesPerToken','weightGBps','deviceCopyGBps','bandwidthRatio','devicePeakBytes','devicePlannedBytes') if k in r})" "$out/mixq_bench_$name.json" 2>&1 | tail -1)"
}
profile_top() {  # JSON: the busiest ops of a --profile run
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for d in r.get("profile", {}).get("devices", []):
    ks = sorted(d.get("kernels", []), key=lambda k: -k.get("total_ms", 0))
    tot = sum(k.get("total_ms", 0) for k in ks)
    print(d.get("name"), "ops total %.1f ms" % tot)
    for k in ks[:12]:
        print("  %-18s calls %6d total %8.2f ms mean %8.2f us" % (k["name"], k["calls"], k["total_ms"], k["mean_us"]))
PY
}
bench ctx128 mixtral --prefill 128 --decode 64
bench prefill2048 mixtral --prefill 2048 --decode 8
[ "$quick" = 1 ] || bench ctx4096 mixtral --prefill 4096 --decode 32
bench profile mixtral --prefill 128 --decode 16 --profile
profile_top "$out/mixq_bench_profile.json"
bench qwen3 qwen3 --prefill 512 --decode 64
bench qwen3_prefill2048 qwen3 --prefill 2048 --decode 8
if [ "$quick" != 1 ]; then
  bench qwen3_ctx4096 qwen3 --prefill 4096 --decode 32
  bench qwen3_profile qwen3 --prefill 512 --decode 16 --profile
  profile_top "$out/mixq_bench_qwen3_profile.json"
fi
# Placement over logical devices of one GPU (issue 10): 1, 2 and 4 logical devices, layer split and expert
# parallel, prefill 512 and 32 decode steps per run (the cost of the boundary copies and of expert dispatch), the
# checker's cost (MIXQ_CHECK_DEVICES=1 vs 0) and copies forced through pinned host memory, on 2 devices.
place() {  # NAME DEVICES PLACEMENT [ENV=VALUE...]
  local name=$1 devices=$2 placement=$3; shift 3
  env MIXQ_CHECK_DEVICES=0 "$@" timeout 240 ./mixq_bench --synthetic mixtral-8x7b --layers 32 --weights awq \
    --devices "$devices" --placement "$placement" --prefill 512 --decode 32 --memcpy-mib 64 >"$out/mixq_bench_$name.json" 2>&1
  echo "mixq_bench $name exit $?: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ('prefillTokensPerSec','decodeTokensPerSec','decodeStepMode','loadMs') if k in r})" "$out/mixq_bench_$name.json" 2>&1 | tail -1)"
}
two=cuda:0,cuda:0/1
four=cuda:0,cuda:0/1,cuda:0/2,cuda:0/3
place devices1 cuda:0 layer
for p in layer expert; do
  place "devices2_$p" $two $p
  place "devices4_$p" $four $p
done
place devices2_layer_checks $two layer MIXQ_CHECK_DEVICES=1
place devices2_layer_staged $two layer MIXQ_CUDA_STAGED_COPIES=1
# Memory and race checks (the sanitizer slows kernels ~100×).
if [ "$quick" != 1 ] && command -v compute-sanitizer >/dev/null; then
  for t in test_cuda_moe_align test_cuda_rms_norm test_cuda_attention "test_cuda_gemm_w4a16 --small" test_cuda_seed_bug; do
    for tool in memcheck racecheck; do
      echo "== $tool $t" >>"$out/sanitizer.log"
      timeout 180 compute-sanitizer --tool $tool --error-exitcode 3 ./$t >>"$out/sanitizer.log" 2>&1
      echo "exit $?" >>"$out/sanitizer.log"
    done
  done
  echo "== memcheck test_gpu_model --placement" >>"$out/sanitizer.log"  # the fixture over 2 and 3 logical devices
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 ./test_gpu_model --placement >>"$out/sanitizer.log" 2>&1
  echo "exit $?" >>"$out/sanitizer.log"
  echo "== memcheck test_backend_ops" >>"$out/sanitizer.log"
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 ./test_backend_ops >>"$out/sanitizer.log" 2>&1
  echo "exit $?" >>"$out/sanitizer.log"
  grep -E "^== |^exit|ERROR SUMMARY|RACECHECK SUMMARY" "$out/sanitizer.log"
fi
exit "$status"
