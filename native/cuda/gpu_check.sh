#!/usr/bin/env bash
# Builds the CUDA backend's tests and benchmark for the GPU at hand, runs them, and keeps the logs.
#   native/cuda/gpu_check.sh OUT_DIR [ARCH]     (ARCH default 90a-real: H100/H200)
# Writes OUT_DIR/{env.txt,build.log,ctest.log (verbose: every case's error),sanitizer.log,bench.json,bench.txt}. Only the CUDA targets are
# built, so this works while the CPU engine is mid-change. Exit status: that of ctest.
set -u -o pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [ARCH]}
arch=${2:-90a-real}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build-gpu
mkdir -p "$out"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; nvcc --version | tail -2; } \
  >"$out/env.txt" 2>&1
targets="test_cuda_device test_cuda_rms_norm test_cuda_moe_align test_cuda_gemv_w4a16 cuda_bench"
if ! { cmake -S "$root" -B "$build" -DMIXQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$build" -j"$(nproc)" --target $targets; } >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  exit 1
fi
cd "$build/native"
ctest -L cuda -V >"$out/ctest.log" 2>&1
status=$?
grep -E "Test +#|tests passed|FAIL" "$out/ctest.log"
./cuda_bench >"$out/bench.json" 2>"$out/bench.txt"
echo "cuda_bench exit $?"
cat "$out/bench.txt"
# Memory and race checks of the small kernels (the sanitizer slows kernels ~100×; the GEMV test is too long).
if command -v compute-sanitizer >/dev/null; then
  for t in test_cuda_moe_align test_cuda_rms_norm; do
    for tool in memcheck racecheck; do
      echo "== $tool $t" >>"$out/sanitizer.log"
      timeout 60 compute-sanitizer --tool $tool --error-exitcode 3 "./$t" >>"$out/sanitizer.log" 2>&1
      echo "exit $?" >>"$out/sanitizer.log"
    done
  done
  grep -E "^== |^exit|ERROR SUMMARY|RACECHECK SUMMARY" "$out/sanitizer.log"
fi
exit "$status"
