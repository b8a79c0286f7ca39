// Prefill attention (attention.h): tiled causal flash attention with GQA and a sliding window on f16 tensor cores.
//   grid (ceil(n / 64) query tiles, heads), 4 warps; warp w owns query rows t0 + 16w … + 15 of head h, which reads
//   kv head h / group. Token t sits at position positions[0] + t.
//   1. q rows → f16 A fragments of mma.m16n8k16, scaled by log2(e)/sqrt(hd) first (scores in log2 units);
//   2. key tiles of 64 over the block's visible range [first window start, last position], two shared-memory
//      buffers filled by cp.async (the next tile loads while this one is used); rows outside the range are
//      zero-filled (cache rows past the last position may hold anything);
//   3. S = Q·Kᵀ (K fragments by ldmatrix), masked (causal, window) only on tiles that cross a boundary;
//   4. online softmax in f32 on the accumulators (running max m, sum l per row, O rescaled);
//   5. O += P·V with P rounded to f16 (V fragments by ldmatrix.trans), f32 accumulation;
//   6. out = O / l for rows t < n.
// Limits: head_dim ∈ {32, 64, 96, 128}; positions consecutive.
#include <algorithm>

#include "async_copy.cuh"
#include "attention.h"
#include "cuda_check.h"

namespace mixq::cuda {
namespace {

constexpr int kBr = 64;  // query rows per block
constexpr int kBc = 64;  // keys per tile
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

template <int HD>
constexpr size_t prefill_shared_bytes() {
  return size_t(2) * 2 * kBc * (HD + 8) * sizeof(__half);  // 2 buffers × (K, V) × [64][HD + 8]
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// c[16×8] += a[16×16] · b[16×8]: f16 inputs, f32 accumulators (fragment layouts of the PTX ISA).
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const __half* smem) {
  const unsigned addr = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const __half* smem) {
  const unsigned addr = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_prefill_kernel(
    const float* __restrict__ q, const __half* __restrict__ k_cache, const __half* __restrict__ v_cache,
    const int32_t* __restrict__ positions, int n, int heads, int kv_heads, int window, float* __restrict__ out) {
  constexpr int KS = HD + 8;  // padded row (halves): the 8 rows an ldmatrix reads fall in different banks
  constexpr int KT = HD / 16, NT = kBc / 8, DT = HD / 8;  // k-steps over hd, key n-tiles, hd n-tiles
  extern __shared__ __align__(16) unsigned char smem[];
  __half* tiles = reinterpret_cast<__half*>(smem);  // [buffer][K, V][kBc][KS]

  const int tile = int(gridDim.x) - 1 - int(blockIdx.x);  // the longest key ranges start first
  const int h = blockIdx.y, kvh = h / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int t0 = tile * kBr, pos0 = positions[0];
  const int p_first = pos0 + t0, p_last = pos0 + min(t0 + kBr, n) - 1;
  const int k_lo = window > 0 ? max(0, p_first - window + 1) : 0, k_hi = p_last;
  const int64_t q_stride = int64_t(heads) * HD, kv_stride = int64_t(kv_heads) * HD;

  // 1. Q fragments: a0 (row g, cols tig·2), a1 (row g + 8), a2 (row g, cols 8 + tig·2), a3 (row g + 8, …).
  uint32_t qa[KT][4];
  const int row0 = t0 + warp * 16 + g;
  {
    const float scale = rsqrtf(float(HD)) * kLog2e;
#pragma unroll
    for (int ks = 0; ks < KT; ++ks)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = row0 + (e & 1) * 8, col = ks * 16 + (e >> 1) * 8 + tig * 2;
        const float2 x = r < n ? *reinterpret_cast<const float2*>(q + r * q_stride + int64_t(h) * HD + col)
                               : make_float2(0.f, 0.f);
        qa[ks][e] = pack_half2(x.x * scale, x.y * scale);
      }
  }

  // 2. Tile loader: keys [jt·64, jt·64 + 64) of kv head kvh into buffer `buf`.
  auto load_tile = [&](int jt, int buf) {
    __half* k_s = tiles + buf * 2 * kBc * KS;
    __half* v_s = k_s + kBc * KS;
    for (int i = threadIdx.x; i < kBc * (HD / 8); i += kThreads) {
      const int j = i / (HD / 8), col = (i % (HD / 8)) * 8, key = jt * kBc + j;
      const bool valid = key >= k_lo && key <= k_hi;
      const int64_t off = (valid ? int64_t(key) : 0) * kv_stride + int64_t(kvh) * HD + col;
      cp_async_16(k_s + j * KS + col, k_cache + off, valid);
      cp_async_16(v_s + j * KS + col, v_cache + off, valid);
    }
    cp_async_commit();
  };

  float o[DT][4];
#pragma unroll
  for (int d = 0; d < DT; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m_row[2] = {-INFINITY, -INFINITY}, l_row[2] = {0.f, 0.f};  // rows g and g + 8 (l: this thread's columns)

  const int jt_lo = k_lo / kBc, jt_hi = k_hi / kBc;
  load_tile(jt_lo, 0);
  for (int jt = jt_lo; jt <= jt_hi; ++jt) {
    const int buf = (jt - jt_lo) & 1;
    if (jt < jt_hi) {
      load_tile(jt + 1, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const __half* k_s = tiles + buf * 2 * kBc * KS;
    const __half* v_s = k_s + kBc * KS;

    // 3. S = Q·Kᵀ: one ldmatrix.x4 gives the B fragments of two k-steps of one key n-tile.
    float s[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KT; ks += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, k_s + (nt * 8 + lane % 8) * KS + ks * 16 + (lane / 8) * 8);
        mma_16816(s[nt], qa[ks], b[0], b[1]);
        mma_16816(s[nt], qa[ks + 1], b[2], b[3]);
      }
    }
    const int key0 = jt * kBc;
    const bool crosses = key0 + kBc - 1 > p_first || (window > 0 && key0 <= p_last - window);
    if (crosses) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = key0 + nt * 8 + tig * 2 + (e & 1), pos = pos0 + row0 + (e >> 1) * 8;
          if (key > pos || (window > 0 && key <= pos - window)) s[nt][e] = -INFINITY;
        }
    }

    // 4. Online softmax per row (the 4 threads of a quad share a row).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_row[i], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: p = 0, O and l stay 0
      const float corr = exp2f(m_row[i] - base);
      m_row[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        s[nt][2 * i] = exp2f(s[nt][2 * i] - base);
        s[nt][2 * i + 1] = exp2f(s[nt][2 * i + 1] - base);
        sum += s[nt][2 * i] + s[nt][2 * i + 1];
      }
      l_row[i] = l_row[i] * corr + sum;
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        o[d][2 * i] *= corr;
        o[d][2 * i + 1] *= corr;
      }
    }

    // 5. O += P·V: the S accumulators of key n-tiles 2kk, 2kk + 1 are the A fragment of k-step kk.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      const uint32_t pa[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
                              pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_s + (kk * 16 + ((lane / 8) & 1) * 8 + lane % 8) * KS + dp * 16 + (lane / 16) * 8);
        mma_16816(o[2 * dp], pa, b[0], b[1]);
        mma_16816(o[2 * dp + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // this buffer is refilled two tiles on
  }

  // 6. Normalise and write rows t < n.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float l = l_row[i];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int r = row0 + i * 8;
    if (r >= n) continue;
    float* dst = out + r * q_stride + int64_t(h) * HD;
#pragma unroll
    for (int d = 0; d < DT; ++d)
      *reinterpret_cast<float2*>(dst + d * 8 + tig * 2) = make_float2(o[d][2 * i] / l, o[d][2 * i + 1] / l);
  }
}

template <int HD>
void launch_prefill_hd(const float* q, const __half* k_cache, const __half* v_cache, const int32_t* positions,
                       int64_t n, const AttentionDims& d, float* out, cudaStream_t stream) {
  constexpr size_t smem = prefill_shared_bytes<HD>();
  auto kernel = attention_prefill_kernel<HD>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((n + kBr - 1) / kBr), unsigned(d.heads));
  kernel<<<grid, kThreads, smem, stream>>>(q, k_cache, v_cache, positions, int(n), d.heads, d.kv_heads, d.window, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_attention_prefill(const float* q, const __half* k_cache, const __half* v_cache, const int32_t* positions,
                              int64_t n, const AttentionDims& d, float* out, cudaStream_t stream) {
  if (n == 0) return;
  switch (d.head_dim) {
    case 32: launch_prefill_hd<32>(q, k_cache, v_cache, positions, n, d, out, stream); break;
    case 64: launch_prefill_hd<64>(q, k_cache, v_cache, positions, n, d, out, stream); break;
    case 96: launch_prefill_hd<96>(q, k_cache, v_cache, positions, n, d, out, stream); break;
    case 128: launch_prefill_hd<128>(q, k_cache, v_cache, positions, n, d, out, stream); break;
    default: throw Error("attention (cuda): head_dim " + std::to_string(d.head_dim) + " is not 32, 64, 96 or 128");
  }
}

}  // namespace mixq::cuda
