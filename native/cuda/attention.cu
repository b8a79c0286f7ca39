// Causal GQA attention over the KV cache (ops_cuda.h). One block of kWarps warps per (token, head):
//   1. lane l holds elements l, l+32, … of the query (head_dim / 32 of them),
//   2. warp w walks keys w, w+kWarps, … of the visible range: dot by warp reduction, online softmax
//      (running max m, sum l, accumulator of the value vector, split over the lanes),
//   3. the kWarps partial (m, l, acc) are merged through shared memory; lane-parallel write of out.
// Limits: head_dim % 32 == 0 and head_dim ≤ 256.
#include <cfloat>

#include "cuda_check.h"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = 8;  // head_dim ≤ 256

template <int PER_LANE>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(const float* q, const float* k_cache,
                                                                const float* v_cache, float* out, int64_t n_past,
                                                                int heads, int kv_heads, int window) {
  constexpr int HD = PER_LANE * 32;
  __shared__ float s_m[kWarps], s_l[kWarps];
  __shared__ float s_acc[kWarps][HD];
  const int64_t t = blockIdx.x / heads;
  const int h = int(blockIdx.x % heads);
  const int kvh = h / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q_stride = int64_t(heads) * HD, kv_stride = int64_t(kv_heads) * HD;
  const float scale = rsqrtf(float(HD));
  float qv[PER_LANE], acc[PER_LANE];
#pragma unroll
  for (int e = 0; e < PER_LANE; ++e) {
    qv[e] = q[t * q_stride + int64_t(h) * HD + lane + 32 * e];
    acc[e] = 0.f;
  }
  const int64_t pos = n_past + t;
  const int64_t lo = window > 0 ? max(int64_t(0), pos - window + 1) : 0;
  float m = -FLT_MAX, l = 0.f;
  for (int64_t j = lo + warp; j <= pos; j += kWarps) {
    const float* kr = k_cache + j * kv_stride + int64_t(kvh) * HD;
    float dot = 0.f;
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) dot += qv[e] * kr[lane + 32 * e];
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float s = dot * scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), p = expf(s - m_new);
    l = l * corr + p;
    const float* vr = v_cache + j * kv_stride + int64_t(kvh) * HD;
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) acc[e] = acc[e] * corr + p * vr[lane + 32 * e];
    m = m_new;
  }
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < PER_LANE; ++e) s_acc[warp][lane + 32 * e] = acc[e];
  __syncthreads();
  float M = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_m[w]);
  float L = 0.f;
  for (int w = 0; w < kWarps; ++w) L += s_l[w] > 0.f ? s_l[w] * expf(s_m[w] - M) : 0.f;
  for (int i = threadIdx.x; i < HD; i += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < kWarps; ++w)
      if (s_l[w] > 0.f) o += s_acc[w][i] * expf(s_m[w] - M);
    out[t * q_stride + int64_t(h) * HD + i] = o / L;
  }
}

}  // namespace

void launch_attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n,
                      int64_t n_past, int heads, int kv_heads, int head_dim, int window, cudaStream_t stream) {
  if (n == 0) return;
  if (head_dim % 32 != 0 || head_dim > 32 * kMaxPerLane) {
    throw Error("attention (cuda): head_dim " + std::to_string(head_dim) + " is not a multiple of 32 up to 256");
  }
  const dim3 grid(unsigned(n * heads)), block(kWarps * 32);
  switch (head_dim / 32) {
#define MIXQ_ATTN_CASE(P) \
  case P: attention_kernel<P><<<grid, block, 0, stream>>>(q, k_cache, v_cache, out, n_past, heads, kv_heads, window); break;
    MIXQ_ATTN_CASE(1) MIXQ_ATTN_CASE(2) MIXQ_ATTN_CASE(3) MIXQ_ATTN_CASE(4)
    MIXQ_ATTN_CASE(5) MIXQ_ATTN_CASE(6) MIXQ_ATTN_CASE(7) MIXQ_ATTN_CASE(8)
#undef MIXQ_ATTN_CASE
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
