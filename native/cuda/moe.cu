// MoE helpers (ops_cuda.h): gather an expert's routed rows, scatter its weighted outputs into their slots, and the
// combine of the slots in ascending expert order.
#include "cuda_check.h"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

__global__ void gather_kernel(const float* src, const int32_t* rows, int64_t width, float* dst) {
  const int64_t i = blockIdx.x;
  const float* s = src + int64_t(rows[i]) * width;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) dst[i * width + c] = s[c];
}

__global__ void scatter_kernel(const float* y, const int32_t* slot, int64_t hidden, const float* weights,
                               float* slots) {
  const int64_t i = blockIdx.x;
  const int64_t s = slot[i];
  const float w = weights[s];
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) slots[s * hidden + c] = y[i * hidden + c] * w;
}

__global__ void combine_kernel(CombineSources src, const int32_t* ids, int k, int64_t hidden, float* out) {
  const int64_t t = blockIdx.x;
  int order[8];
  for (int j = 0; j < k; ++j) order[j] = j;
  for (int a = 1; a < k; ++a)  // insertion sort of the k slots by expert id (k ≤ 8)
    for (int b = a; b > 0 && ids[t * k + order[b]] < ids[t * k + order[b - 1]]; --b) {
      const int tmp = order[b];
      order[b] = order[b - 1];
      order[b - 1] = tmp;
    }
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    float acc = 0.f;
    for (int i = 0; i < k; ++i) {
      const int j = order[i];
      acc += src.slots[src.owner[ids[t * k + j]]][(t * k + j) * hidden + c];
    }
    out[t * hidden + c] = acc;
  }
}

}  // namespace

void launch_gather_rows(const float* src, const int32_t* rows, int64_t m, int64_t width, float* dst,
                        cudaStream_t stream) {
  if (m == 0) return;
  gather_kernel<<<unsigned(m), 256, 0, stream>>>(src, rows, width, dst);
  CUDA_CHECK_LAUNCH();
}

void launch_scatter_weighted(const float* y, const int32_t* slot, int64_t m, int64_t hidden, const float* weights,
                             float* slots, cudaStream_t stream) {
  if (m == 0) return;
  scatter_kernel<<<unsigned(m), 256, 0, stream>>>(y, slot, hidden, weights, slots);
  CUDA_CHECK_LAUNCH();
}

void launch_moe_combine(const CombineSources& src, const int32_t* ids, int64_t n, int k, int64_t hidden, float* out,
                        cudaStream_t stream) {
  if (n == 0) return;
  combine_kernel<<<unsigned(n), 256, 0, stream>>>(src, ids, k, hidden, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
