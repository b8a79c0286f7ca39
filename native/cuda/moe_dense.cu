// Routed dense (bf16/fp16/f32) experts for decode (ops_cuda.h): the expert of each slot is read on the device from
// the router's ids, its matrix from a device table — no host synchronisation, so a decode step with a 16-bit
// checkpoint can be recorded as a graph too. Grid (⌈out/8⌉, matrices · slots); problem z = m · slots + s multiplies
// matrix first + m of expert ids[s] [out, in] by x row s / x_row_div, one warp per output row (16-byte loads of W,
// shuffle reduction), and writes y row z, scaled by y_scale[s] when given. A slot whose id is out of range or whose
// expert is not held here (null matrix) is skipped: its y row is left as it is.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "dtype_cuda.cuh"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

template <class T>
__global__ void __launch_bounds__(256) moe_dense_gemv_kernel(DenseRoutes r, int64_t in, int64_t out) {
  constexpr int VEC = 16 / sizeof(T);
  const int z = blockIdx.y, m = z / r.slots, s = z % r.slots;
  const int e = r.expert_of[s];
  if (e < 0 || e >= r.num_experts) return;
  const T* w = static_cast<const T*>(r.table[size_t(e) * 3 + r.first_matrix + m]);
  if (!w) return;
  const int64_t o = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= out) return;
  const float* x = r.x + int64_t(s / r.x_row_div) * in;
  const uint4* row = reinterpret_cast<const uint4*>(w + o * in);
  float acc = 0.f;
  for (int64_t c = lane; c < in / VEC; c += 32) {
    const uint4 raw = row[c];
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc += to_float(v[i]) * x[c * VEC + i];
  }
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) r.y[int64_t(z) * out + o] = r.y_scale ? r.y_scale[s] * acc : acc;
}

}  // namespace

void launch_moe_dense_gemv(const DenseRoutes& r, int matrices, DType dtype, int64_t in, int64_t out,
                           cudaStream_t stream) {
  const dim3 grid(unsigned((out + 7) / 8), unsigned(matrices * r.slots)), block(256);
  switch (dtype) {
    case DType::BF16: moe_dense_gemv_kernel<__nv_bfloat16><<<grid, block, 0, stream>>>(r, in, out); break;
    case DType::F16: moe_dense_gemv_kernel<__half><<<grid, block, 0, stream>>>(r, in, out); break;
    case DType::F32: moe_dense_gemv_kernel<float><<<grid, block, 0, stream>>>(r, in, out); break;
    default: throw Error(std::string("moe dense experts (cuda): unsupported weight dtype ") + dtype_name(dtype));
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
