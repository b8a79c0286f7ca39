// Elementwise ops (ops_cuda.h): residual add and SwiGLU.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda_check.h"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

// Written as the CPU's x / (1 + exp(-x)) * b, with expf.
__global__ void swiglu_kernel(float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = a[i];
    a[i] = x / (1.0f + expf(-x)) * b[i];
  }
}

// h = fp16(silu(a)·b): the routed experts' hidden state, ready as the next int4 GEMV's input.
__global__ void swiglu_f16_kernel(const float* a, const float* b, __half* h, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = a[i];
    h[i] = __float2half_rn(x / (1.0f + expf(-x)) * b[i]);
  }
}

__global__ void f32_to_f16_kernel(const float* x, __half* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2half_rn(x[i]);
}

unsigned blocks_for(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 65535)); }

}  // namespace

void launch_add(const float* a, const float* b, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n), 256, 0, stream>>>(a, b, y, n);
  CUDA_CHECK_LAUNCH();
}

void launch_f32_to_f16(const float* x, void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  f32_to_f16_kernel<<<blocks_for(n), 256, 0, stream>>>(x, static_cast<__half*>(y), n);
  CUDA_CHECK_LAUNCH();
}

void launch_swiglu(float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_kernel<<<blocks_for(n), 256, 0, stream>>>(a, b, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda

namespace mixq::cuda {

void launch_swiglu_f16(const float* a, const float* b, void* h, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_f16_kernel<<<blocks_for(n), 256, 0, stream>>>(a, b, static_cast<__half*>(h), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
