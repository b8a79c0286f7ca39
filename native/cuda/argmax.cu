// Row argmax on the GPU (ops_cuda.h; reference ops/argmax.h). One block of 1024 threads per row: each thread scans
// a strided slice keeping (value, index) — NaN skipped, the lower index on equal values — then a warp shuffle
// reduction and one across warps with the same rule, so the result equals the reference's.
#include <cfloat>

#include "cuda_check.h"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

constexpr int kThreads = 1024;

// (v, i) wins over (w, j): larger value, or equal value and lower index; index -1 means "nothing yet".
__device__ __forceinline__ bool better(float v, int i, float w, int j) {
  if (i < 0) return false;
  if (j < 0) return true;
  return v > w || (v == w && i < j);
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* x, int64_t n, int32_t* ids) {
  const float* row = x + blockIdx.x * n;
  float best = -FLT_MAX;
  int at = -1;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = row[i];
    if (v == v && better(v, int(i), best, at)) best = v, at = int(i);
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, off);
    const int i = __shfl_xor_sync(0xffffffffu, at, off);
    if (better(v, i, best, at)) best = v, at = i;
  }
  __shared__ float s_best[kThreads / 32];
  __shared__ int s_at[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) s_best[warp] = best, s_at[warp] = at;
  __syncthreads();
  if (warp != 0) return;
  best = s_best[lane], at = s_at[lane];
  for (int off = 16; off > 0; off >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, off);
    const int i = __shfl_xor_sync(0xffffffffu, at, off);
    if (better(v, i, best, at)) best = v, at = i;
  }
  if (lane == 0) ids[blockIdx.x] = at < 0 ? 0 : at;
}

}  // namespace

void launch_argmax(const float* x, int64_t rows, int64_t n, int32_t* ids, cudaStream_t stream) {
  if (rows == 0) return;
  argmax_kernel<<<unsigned(rows), kThreads, 0, stream>>>(x, n, ids);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
