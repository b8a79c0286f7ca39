// RoPE (ops_cuda.h): one thread per (token, head, pair i < hd/2).
#include "cuda_check.h"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

__global__ void rope_kernel(float* x, int64_t n, int heads, int head_dim, const int32_t* positions,
                            const float* inv_freq) {
  const int half = head_dim / 2;
  const int64_t total = n * heads * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(idx % half);
    const int64_t th = idx / half;  // token · heads + head
    const int64_t t = th / heads;
    const float angle = float(positions[t]) * inv_freq[i];  // f32 product, as the CPU and transformers
    const float c = float(cos(double(angle))), s = float(sin(double(angle)));
    float* v = x + th * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

}  // namespace

void launch_rope(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                 cudaStream_t stream) {
  const int64_t total = n * heads * (head_dim / 2);
  if (total == 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65535));
  rope_kernel<<<blocks, 256, 0, stream>>>(x, n, heads, head_dim, positions, inv_freq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
