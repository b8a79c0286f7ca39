// Linear layers (ops_cuda.h): y[n, out] = x[n, in] · Wᵀ, one tiled kernel for every weight format.
//   Block tile: 32 tokens × 64 outputs; K in steps of 32. Per step the block loads the x tile [32, 32] and the
//   W tile [32 k, 64 outputs] into shared memory as f32 — dense formats converted, AWQ int4 dequantized
//   ((q − z)·s, as the CPU's weight_row) — then each of the 256 threads accumulates 2 tokens × 4 outputs in f32.
// Limits: none on shapes (edges are masked). Decode (≤ 8 tokens) takes a warp-per-row GEMV for dense weights and
// gemv_w4a16.cu for AWQ.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "dtype_cuda.cuh"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

constexpr int TN = 32, TO = 64, TK = 32, kThreads = 256;

// W element (o, k) as f32 for each storage format.
template <class T>
struct DenseRows {  // W [out, in]
  const T* w;
  int64_t in;
  __device__ float operator()(int64_t o, int64_t k) const { return to_float(w[o * in + k]); }
};
struct TransposedF32 {  // W stored [in, out]
  const float* w;
  int64_t out;
  __device__ float operator()(int64_t o, int64_t k) const { return w[k * out + o]; }
};
struct AwqInt4 {  // qweight [in, out/8], qzeros [in/G, out/8], scales [in/G, out]
  const int32_t* qweight;
  const int32_t* qzeros;
  const __half* scales;
  int group;
  int64_t out;
  __device__ float operator()(int64_t o, int64_t k) const {
    const int shift = 4 * ((o & 7) / 2 + 4 * (o & 1));  // column offset j lives in slot (j/2 + 4·(j&1))
    const int64_t words = out / 8, g = k / group;
    const int q = (uint32_t(qweight[k * words + o / 8]) >> shift) & 0xF;
    const int z = (uint32_t(qzeros[g * words + o / 8]) >> shift) & 0xF;
    return float(q - z) * __half2float(scales[g * out + o]);
  }
};

template <class W>
__global__ void __launch_bounds__(kThreads) linear_kernel(const float* x, W w, float* y, int64_t n, int64_t in,
                                                           int64_t out) {
  __shared__ float xs[TN][TK + 1];
  __shared__ float ws[TK][TO + 1];
  const int64_t o0 = int64_t(blockIdx.x) * TO, t0 = int64_t(blockIdx.y) * TN;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[2][4] = {};
  for (int64_t k0 = 0; k0 < in; k0 += TK) {
    for (int i = tid; i < TN * TK; i += kThreads) {
      const int r = i / TK, c = i % TK;
      const int64_t t = t0 + r, k = k0 + c;
      xs[r][c] = (t < n && k < in) ? x[t * in + k] : 0.f;
    }
    for (int i = tid; i < TO * TK; i += kThreads) {
      const int oo = i / TK, kk = i % TK;  // consecutive threads walk k: contiguous for W [out, in]
      const int64_t o = o0 + oo, k = k0 + kk;
      ws[kk][oo] = (o < out && k < in) ? w(o, k) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < TK; ++kk) {
      const float a0 = xs[2 * ty][kk], a1 = xs[2 * ty + 1][kk];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float b = ws[kk][tx + 16 * r];
        acc[0][r] += a0 * b;
        acc[1][r] += a1 * b;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const int64_t t = t0 + 2 * ty + s;
    if (t >= n) continue;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t o = o0 + tx + 16 * r;
      if (o < out) y[t * out + o] = acc[s][r];
    }
  }
}

template <class W>
void launch(const float* x, W w, float* y, int64_t n, int64_t in, int64_t out, cudaStream_t stream) {
  if (n == 0 || out == 0) return;
  const dim3 grid(unsigned((out + TO - 1) / TO), unsigned((n + TN - 1) / TN));
  linear_kernel<<<grid, kThreads, 0, stream>>>(x, w, y, n, in, out);
  CUDA_CHECK_LAUNCH();
}

// Decode (n ≤ 8 tokens): one warp per output row, 16-byte loads of W, every token's dot product from the same
// pass over the row; the warp's partial sums are reduced by shuffles. Needs in % (16 / sizeof(T)) == 0.
template <class T, int N>
__global__ void __launch_bounds__(256) gemv_dense_kernel(const float* x, const T* w, float* y, int64_t in,
                                                         int64_t out) {
  constexpr int VEC = 16 / sizeof(T);
  const int64_t o = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= out) return;
  const uint4* row = reinterpret_cast<const uint4*>(w + o * in);
  float acc[N] = {};
  for (int64_t c = lane; c < in / VEC; c += 32) {
    const uint4 raw = row[c];
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float wv = to_float(v[e]);
#pragma unroll
      for (int t = 0; t < N; ++t) acc[t] += wv * x[t * in + c * VEC + e];
    }
  }
#pragma unroll
  for (int t = 0; t < N; ++t) {
    float a = acc[t];
    for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
    if (lane == 0) y[t * out + o] = a;
  }
}

template <class T>
bool try_gemv_dense(const float* x, const T* w, float* y, int64_t n, int64_t in, int64_t out, cudaStream_t stream) {
  if (n < 1 || n > 8 || in % (16 / sizeof(T)) != 0) return false;
  const dim3 grid(unsigned((out + 7) / 8)), block(256);
  switch (n) {
#define MIXQ_GEMV_CASE(N) \
  case N: gemv_dense_kernel<T, N><<<grid, block, 0, stream>>>(x, w, y, in, out); break;
    MIXQ_GEMV_CASE(1) MIXQ_GEMV_CASE(2) MIXQ_GEMV_CASE(3) MIXQ_GEMV_CASE(4)
    MIXQ_GEMV_CASE(5) MIXQ_GEMV_CASE(6) MIXQ_GEMV_CASE(7) MIXQ_GEMV_CASE(8)
#undef MIXQ_GEMV_CASE
  }
  CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace

void launch_linear_dense(const float* x, const void* w, DType dtype, bool transposed, float* y, int64_t n,
                         int64_t in, int64_t out, cudaStream_t stream) {
  if (transposed) {
    if (dtype != DType::F32) throw Error("linear (cuda): a transposed weight must be F32");
    return launch(x, TransposedF32{static_cast<const float*>(w), out}, y, n, in, out, stream);
  }
  switch (dtype) {
    case DType::BF16:
      if (try_gemv_dense(x, static_cast<const __nv_bfloat16*>(w), y, n, in, out, stream)) return;
      return launch(x, DenseRows<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(w), in}, y, n, in, out, stream);
    case DType::F16:
      if (try_gemv_dense(x, static_cast<const __half*>(w), y, n, in, out, stream)) return;
      return launch(x, DenseRows<__half>{static_cast<const __half*>(w), in}, y, n, in, out, stream);
    case DType::F32:
      if (try_gemv_dense(x, static_cast<const float*>(w), y, n, in, out, stream)) return;
      return launch(x, DenseRows<float>{static_cast<const float*>(w), in}, y, n, in, out, stream);
    default: throw Error(std::string("linear (cuda): unsupported weight dtype ") + dtype_name(dtype));
  }
}

void launch_linear_awq(const float* x, const int32_t* qweight, const int32_t* qzeros, const void* scales, int group,
                       float* y, int64_t n, int64_t in, int64_t out, cudaStream_t stream) {
  launch(x, AwqInt4{qweight, qzeros, static_cast<const __half*>(scales), group, out}, y, n, in, out, stream);
}

}  // namespace mixq::cuda
