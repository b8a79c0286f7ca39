// Router softmax → top-k (ops_cuda.h): one warp per token, lane i holding logits i, i+32, … in registers (E ≤ 256:
// at most 8 a lane). Max and sum by warp reductions; exp(l − max) per expert; k selection passes, each a warp
// reduction of (value, index) — the larger probability, the lower index on ties, as the reference's strict '>' —
// over the experts not taken yet; weights p / sum, renormalised over the chosen k when asked.
#include <cfloat>
#include <climits>

#include "cuda_check.h"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

constexpr int kPerLane = 8;  // 256 experts / 32 lanes

__device__ __forceinline__ bool wins(float v, int e, float w, int f) { return v > w || (v == w && e < f); }

__global__ void __launch_bounds__(128) router_kernel(const float* logits, int64_t n, int E, int k, bool renormalize,
                                                     int32_t* ids, float* weights) {
  const int64_t t = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (t >= n) return;  // the whole warp: t is the warp's token
  const float* l = logits + t * E;
  float p[kPerLane];
  float mx = -FLT_MAX;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    p[i] = e < E ? l[e] : -FLT_MAX;
    mx = fmaxf(mx, p[i]);
  }
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    p[i] = e < E ? expf(p[i] - mx) : -1.f;  // -1: no expert (or, later, taken)
    if (e < E) sum += p[i];
  }
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  float chosen = 0.f;
  for (int j = 0; j < k; ++j) {
    float bv = -1.f;
    int be = INT_MAX;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (p[i] >= 0.f && wins(p[i], lane + 32 * i, bv, be)) bv = p[i], be = lane + 32 * i;
    for (int off = 16; off > 0; off >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, bv, off);
      const int e = __shfl_xor_sync(0xffffffffu, be, off);
      if (wins(v, e, bv, be)) bv = v, be = e;
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + 32 * i == be) p[i] = -1.f;  // taken
    const float w = bv / sum;
    chosen += w;
    if (lane == 0) ids[t * k + j] = be, weights[t * k + j] = w;
  }
  if (renormalize && lane == 0)
    for (int j = 0; j < k; ++j) weights[t * k + j] /= chosen;
}

}  // namespace

void launch_router(const float* logits, int64_t n, int num_experts, int k, bool renormalize, int32_t* ids,
                   float* weights, cudaStream_t stream) {
  if (n == 0) return;
  router_kernel<<<unsigned((n * 32 + 127) / 128), 128, 0, stream>>>(logits, n, num_experts, k, renormalize, ids,
                                                                    weights);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
