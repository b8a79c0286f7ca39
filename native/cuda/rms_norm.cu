// RMSNorm kernel, its launcher and the guarded entry (rms_norm.h).
//
// One block per row:
//   1. each thread sums x² over a strided slice of the row (16-byte vector loads when the row allows),
//   2. a block reduction (warp shuffles, then one value per warp through shared memory) gives mean(x²),
//   3. each thread re-reads its slice and writes y = weight · round_T(x · r).
// Limits: hidden < 2^31 elements; any number of rows (grid.x is capped, blocks loop over rows).
#include <string>

#include "cuda_check.h"
#include "device_guard.h"
#include "dtype_cuda.cuh"
#include "rms_norm.h"

namespace mixq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

__device__ __forceinline__ float block_sum(float v, float* scratch /* [32] */) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = lane < warps ? scratch[lane] : 0.0f;
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;  // every thread holds the block total
}

// x, y: [rows, hidden] T; w: [hidden] W. VEC elements per load (VEC divides hidden; pointers VEC-aligned).
template <class T, class W, int VEC>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const T* x, const W* w, T* y, int64_t rows,
                                                              int hidden, float eps) {
  __shared__ float scratch[32];
  const int nvec = hidden / VEC;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const Vec<T, VEC>* xr = reinterpret_cast<const Vec<T, VEC>*>(x + row * hidden);
    Vec<T, VEC>* yr = reinterpret_cast<Vec<T, VEC>*>(y + row * hidden);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      const Vec<T, VEC> v = xr[i];
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float f = to_float(v.v[k]);
        ss = fmaf(f, f, ss);
      }
    }
    const float r = 1.0f / sqrtf(block_sum(ss, scratch) / static_cast<float>(hidden) + eps);
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      const Vec<T, VEC> v = xr[i];
      Vec<T, VEC> o;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const T normed = from_float<T>(to_float(v.v[k]) * r);
        o.v[k] = from_float<T>(to_float(w[i * VEC + k]) * to_float(normed));
      }
      yr[i] = o;
    }
    __syncthreads();  // scratch is reused by the next row
  }
}

template <class T, class W>
void launch_typed(const void* x, const void* w, void* y, int64_t rows, int64_t hidden, float eps,
                  cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec_ok = hidden % kVec == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(y) % 16 == 0;
  const int blocks = static_cast<int>(rows < kMaxBlocks ? rows : kMaxBlocks);
  if (vec_ok)
    rms_norm_kernel<T, W, kVec><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<const W*>(w),
                                                                 static_cast<T*>(y), rows, static_cast<int>(hidden), eps);
  else
    rms_norm_kernel<T, W, 1><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<const W*>(w),
                                                              static_cast<T*>(y), rows, static_cast<int>(hidden), eps);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void launch_weight(const void* x, const void* w, void* y, int64_t rows, int64_t hidden, float eps, DType wt,
                   cudaStream_t stream) {
  switch (wt) {
    case DType::F32: return launch_typed<T, float>(x, w, y, rows, hidden, eps, stream);
    case DType::F16: return launch_typed<T, __half>(x, w, y, rows, hidden, eps, stream);
    case DType::BF16: return launch_typed<T, __nv_bfloat16>(x, w, y, rows, hidden, eps, stream);
    default: throw Error("rms_norm: weight dtype must be f32, f16 or bf16");
  }
}

}  // namespace

void launch_rms_norm(const void* x, const void* weight, void* y, int64_t rows, int64_t hidden, float eps,
                     DType dtype, DType weight_dtype, cudaStream_t stream) {
  if (rows == 0) return;
  switch (dtype) {
    case DType::F32: return launch_weight<float>(x, weight, y, rows, hidden, eps, weight_dtype, stream);
    case DType::F16: return launch_weight<__half>(x, weight, y, rows, hidden, eps, weight_dtype, stream);
    case DType::BF16: return launch_weight<__nv_bfloat16>(x, weight, y, rows, hidden, eps, weight_dtype, stream);
    default: throw Error("rms_norm: activation dtype must be f32, f16 or bf16");
  }
}

void rms_norm(const void* x, const void* weight, void* y, int64_t rows, int64_t hidden, float eps, DType dtype,
              DType weight_dtype, cudaStream_t stream) {
  if (rows < 0 || hidden <= 0 || hidden >= (int64_t{1} << 31))
    throw Error("rms_norm: bad shape [" + std::to_string(rows) + ", " + std::to_string(hidden) + "]");
  if (!(eps >= 0.0f)) throw Error("rms_norm: eps must be >= 0");
  if (rows == 0) return;
  const int device = device_of_tensors("rms_norm", {{x, "x"}, {weight, "weight"}, {y, "y"}});
  DeviceGuard guard(device);
  check_stream_device("rms_norm", stream, device);
  launch_rms_norm(x, weight, y, rows, hidden, eps, dtype, weight_dtype, stream);
}

}  // namespace mixq::cuda
