// Router softmax → top-k (ops_cuda.h): one thread per token (E ≤ 256 probabilities in local memory), the CPU's
// arithmetic order: max, exp(l − max), sum, divide; k argmax passes, strict '>' keeps the lower index on ties.
#include "cuda_check.h"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

__global__ void router_kernel(const float* logits, int64_t n, int E, int k, bool renormalize, int32_t* ids,
                              float* weights) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* l = logits + t * E;
  float p[256];
  float mx = l[0];
  for (int e = 1; e < E; ++e) mx = fmaxf(mx, l[e]);
  float sum = 0.f;
  for (int e = 0; e < E; ++e) {
    p[e] = expf(l[e] - mx);
    sum += p[e];
  }
  for (int e = 0; e < E; ++e) p[e] /= sum;
  float chosen = 0.f;
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int e = 0; e < E; ++e) {
      if (p[e] < 0.f) continue;  // taken
      if (best < 0 || p[e] > p[best]) best = e;
    }
    ids[t * k + j] = best;
    weights[t * k + j] = p[best];
    chosen += p[best];
    p[best] = -1.f;
  }
  if (renormalize)
    for (int j = 0; j < k; ++j) weights[t * k + j] /= chosen;
}

}  // namespace

void launch_router(const float* logits, int64_t n, int num_experts, int k, bool renormalize, int32_t* ids,
                   float* weights, cudaStream_t stream) {
  if (n == 0) return;
  router_kernel<<<unsigned((n + 127) / 128), 128, 0, stream>>>(logits, n, num_experts, k, renormalize, ids, weights);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
