// Decode attention (attention.h), split-K over the f16 cache ("flash decoding"), for a few tokens:
//   grid (chunks = ceil(capacity / 64), kv_heads), 128 threads; a block holds the kv head's GQA group for all n
//   tokens: rows r = t·group + g (query head kvh·group + g), rows ≤ 64.
//   0. the chunk's keys [c·64, c·64 + 64) against the tokens' positions (read on the device): a chunk past the
//      last position, or before every token's window, exits at once (the merge never reads it);
//   1. cp.async the chunk's K and V rows into shared memory (rows no token can see are zero-filled: cache rows
//      past the last position may hold anything), q rows (f32, pre-scaled by log2(e)/sqrt(hd)) beside them;
//   2. scores s[r][j] = q_r·k_j (f32), masked to −inf where key j is not visible to row r's token;
//   3. per row: chunk max m, p = 2^(s − m), sum l (one warp per row);
//   4. acc[r] = Σ_j p[r][j]·v_j (f32), written with (m, l) as this chunk's partial.
// The merge kernel, one block per (token, head): over the chunks the token can see, in ascending order,
//   M = max m_c, out = Σ_c 2^(m_c − M)·acc_c / Σ_c 2^(m_c − M)·l_c — a fixed order, so results are deterministic.
// Workspace: acc [chunks, n·heads, hd] f32, then (m, l) [chunks, n·heads, 2] f32.
#include <cfloat>

#include "async_copy.cuh"
#include "attention.h"
#include "cuda_check.h"

namespace mixq::cuda {
namespace {

constexpr int kChunk = 64;
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory of one block: K [64][HD + 8] (padded: rows read by different threads stay in different banks),
// V [64][HD], q [rows][HD] f32, p [rows][64] f32, m and l [rows].
template <int HD>
constexpr size_t shared_bytes(int rows) {
  return size_t(kChunk) * (HD + 8) * 2 + size_t(kChunk) * HD * 2 + size_t(rows) * HD * 4 + size_t(rows) * kChunk * 4 +
         size_t(rows) * 2 * 4;
}

// RPT: rows per thread in steps 2 and 4 (≥ rows / (128 / 64) and ≥ rows / (256 / HD)).
template <int HD, int RPT>
__global__ void __launch_bounds__(kThreads) attention_decode_kernel(
    const float* __restrict__ q, const __half* __restrict__ k_cache, const __half* __restrict__ v_cache,
    const int32_t* __restrict__ positions, int n, int heads, int kv_heads, int window, int capacity,
    float* __restrict__ part_acc, float* __restrict__ part_ml) {
  constexpr int KS = HD + 8;  // padded K row (halves)
  extern __shared__ __align__(16) unsigned char smem[];
  __half* k_s = reinterpret_cast<__half*>(smem);
  __half* v_s = k_s + kChunk * KS;
  float* q_s = reinterpret_cast<float*>(v_s + kChunk * HD);
  const int group = heads / kv_heads, rows = n * group;
  float* p_s = q_s + rows * HD;
  float* m_s = p_s + rows * kChunk;
  float* l_s = m_s + rows;

  // 0. Which keys of this chunk any token can see.
  const int c = blockIdx.x, kvh = blockIdx.y, key0 = c * kChunk;
  const int first = positions[0], last = positions[n - 1];
  if (key0 > last || (window > 0 && key0 + kChunk - 1 <= first - window)) return;
  const int lo = window > 0 ? first - window + 1 : 0;  // keys below lo: invisible to every token

  // 1. K and V rows (16 bytes per copy), q rows.
  const int64_t kv_stride = int64_t(kv_heads) * HD;
  constexpr int kPieces = HD / 8;  // 16-byte pieces per row
  for (int i = threadIdx.x; i < kChunk * kPieces; i += kThreads) {
    const int j = i / kPieces, col = (i % kPieces) * 8, key = key0 + j;
    const bool valid = key >= lo && key <= last && key < capacity;
    const int64_t off = (valid ? int64_t(key) : 0) * kv_stride + int64_t(kvh) * HD + col;
    cp_async_16(k_s + j * KS + col, k_cache + off, valid);
    cp_async_16(v_s + j * HD + col, v_cache + off, valid);
  }
  const float scale = rsqrtf(float(HD)) * kLog2e;
  for (int i = threadIdx.x; i < rows * (HD / 4); i += kThreads) {
    const int r = i / (HD / 4), col = (i % (HD / 4)) * 4;
    const int t = r / group, h = kvh * group + r % group;
    float4 x = *reinterpret_cast<const float4*>(q + (int64_t(t) * heads + h) * HD + col);
    x.x *= scale, x.y *= scale, x.z *= scale, x.w *= scale;
    *reinterpret_cast<float4*>(q_s + r * HD + col) = x;
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // 2. Scores: thread (key j, row set rs) computes rows rs, rs + 2, … for key j.
  {
    const int j = threadIdx.x % kChunk, rs = threadIdx.x / kChunk, key = key0 + j;
    float dot[RPT];
#pragma unroll
    for (int m = 0; m < RPT; ++m) dot[m] = 0.f;
    const __half* kr = k_s + j * KS;
#pragma unroll 4
    for (int i = 0; i < HD; i += 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(kr + i);
      const __half2* h2 = reinterpret_cast<const __half2*>(&raw);
      const float2 k0 = __half22float2(h2[0]), k1 = __half22float2(h2[1]), k2 = __half22float2(h2[2]),
                   k3 = __half22float2(h2[3]);
#pragma unroll
      for (int m = 0; m < RPT; ++m) {
        const int r = rs + 2 * m;
        if (r < rows) {
          const float4 qa = *reinterpret_cast<const float4*>(q_s + r * HD + i);
          const float4 qb = *reinterpret_cast<const float4*>(q_s + r * HD + i + 4);
          dot[m] += qa.x * k0.x + qa.y * k0.y + qa.z * k1.x + qa.w * k1.y + qb.x * k2.x + qb.y * k2.y +
                    qb.z * k3.x + qb.w * k3.y;
        }
      }
    }
#pragma unroll
    for (int m = 0; m < RPT; ++m) {
      const int r = rs + 2 * m;
      if (r < rows) {
        const int pos = positions[r / group];
        const bool visible = key <= pos && (window <= 0 || key > pos - window);
        p_s[r * kChunk + j] = visible ? dot[m] : -INFINITY;
      }
    }
  }
  __syncthreads();

  // 3. Softmax within the chunk, one warp per row.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < rows; r += kThreads / 32) {
    float* pr = p_s + r * kChunk;
    const float a = pr[lane], b = pr[lane + 32];
    float mx = fmaxf(a, b);
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float base = mx == -INFINITY ? 0.f : mx;  // a row with no visible key: p = 0, l = 0
    const float pa = exp2f(a - base), pb = exp2f(b - base);
    pr[lane] = pa;
    pr[lane + 32] = pb;
    float sum = pa + pb;
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) {
      m_s[r] = mx;
      l_s[r] = sum;
    }
  }
  __syncthreads();

  // 4. acc = p·V: thread (column pair d2, row set rs) over rows rs, rs + 256/HD, … (HD = 96: 32 threads idle)
  constexpr int kPairs = HD / 2, kSets = kThreads / kPairs;
  if (threadIdx.x < kSets * kPairs) {
    const int d2 = threadIdx.x % kPairs, rs = threadIdx.x / kPairs;
    float2 acc[RPT];
#pragma unroll
    for (int m = 0; m < RPT; ++m) acc[m] = make_float2(0.f, 0.f);
#pragma unroll 8
    for (int j = 0; j < kChunk; ++j) {
      const float2 vv = __half22float2(reinterpret_cast<const __half2*>(v_s + j * HD)[d2]);
#pragma unroll
      for (int m = 0; m < RPT; ++m) {
        const int r = rs + kSets * m;
        if (r < rows) {
          const float p = p_s[r * kChunk + j];
          acc[m].x += p * vv.x;
          acc[m].y += p * vv.y;
        }
      }
    }
    const int64_t slot0 = int64_t(c) * n * heads;
#pragma unroll
    for (int m = 0; m < RPT; ++m) {
      const int r = rs + kSets * m;
      if (r < rows) {
        const int64_t slot = slot0 + int64_t(r / group) * heads + kvh * group + r % group;
        reinterpret_cast<float2*>(part_acc + slot * HD)[d2] = acc[m];
        if (d2 == 0) {
          part_ml[2 * slot] = m_s[r];
          part_ml[2 * slot + 1] = l_s[r];
        }
      }
    }
  }
}

// One block of HD threads per (token, head): the chunks [c_lo, c_hi] the token sees, in ascending order.
template <int HD>
__global__ void __launch_bounds__(HD) attention_merge_kernel(const float* __restrict__ part_acc,
                                                             const float* __restrict__ part_ml,
                                                             const int32_t* __restrict__ positions, int n, int heads,
                                                             int window, int chunks, float* __restrict__ out) {
  const int row = blockIdx.x;  // t·heads + h
  const int pos = positions[row / heads];
  const int c_lo = window > 0 ? max(0, pos - window + 1) / kChunk : 0;
  const int c_hi = min(pos / kChunk, chunks - 1);
  const int64_t rows = int64_t(n) * heads;
  float M = -INFINITY;
  for (int c = c_lo; c <= c_hi; ++c) M = fmaxf(M, part_ml[2 * (c * rows + row)]);
  float L = 0.f, o = 0.f;
  for (int c = c_lo; c <= c_hi; ++c) {
    const int64_t slot = c * rows + row;
    const float m = part_ml[2 * slot];
    if (m == -INFINITY) continue;  // no key of this chunk visible to this token
    const float w = exp2f(m - M);
    L += w * part_ml[2 * slot + 1];
    o += w * part_acc[slot * HD + threadIdx.x];
  }
  out[int64_t(row) * HD + threadIdx.x] = o / L;
}

template <int HD, int RPT>
void launch_split(const float* q, const __half* k_cache, const __half* v_cache, const int32_t* positions, int n,
                  const AttentionDims& d, float* part_acc, float* part_ml, cudaStream_t stream) {
  const int rows = n * (d.heads / d.kv_heads);
  const size_t smem = shared_bytes<HD>(rows);
  auto kernel = attention_decode_kernel<HD, RPT>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes<HD>(kDecodeMaxRows))));
  const dim3 grid(unsigned((d.capacity + kChunk - 1) / kChunk), unsigned(d.kv_heads));
  kernel<<<grid, kThreads, smem, stream>>>(q, k_cache, v_cache, positions, n, d.heads, d.kv_heads, d.window,
                                           int(d.capacity), part_acc, part_ml);
  CUDA_CHECK_LAUNCH();
}

template <int HD>
void launch_decode_hd(const float* q, const __half* k_cache, const __half* v_cache, const int32_t* positions, int n,
                      const AttentionDims& d, float* workspace, float* out, cudaStream_t stream) {
  const int64_t chunks = (d.capacity + kChunk - 1) / kChunk, slots = chunks * n * d.heads;
  float* part_acc = workspace;
  float* part_ml = workspace + slots * HD;
  // Rows per thread: steps 2 (2 row sets) and 4 (256 / HD row sets, ≥ 2) both fit in ceil(rows / 2).
  const int rpt = (n * (d.heads / d.kv_heads) + 1) / 2;
  if (rpt <= 1) launch_split<HD, 1>(q, k_cache, v_cache, positions, n, d, part_acc, part_ml, stream);
  else if (rpt <= 2) launch_split<HD, 2>(q, k_cache, v_cache, positions, n, d, part_acc, part_ml, stream);
  else if (rpt <= 4) launch_split<HD, 4>(q, k_cache, v_cache, positions, n, d, part_acc, part_ml, stream);
  else if (rpt <= 8) launch_split<HD, 8>(q, k_cache, v_cache, positions, n, d, part_acc, part_ml, stream);
  else if (rpt <= 16) launch_split<HD, 16>(q, k_cache, v_cache, positions, n, d, part_acc, part_ml, stream);
  else launch_split<HD, 32>(q, k_cache, v_cache, positions, n, d, part_acc, part_ml, stream);
  attention_merge_kernel<HD><<<unsigned(n * d.heads), HD, 0, stream>>>(part_acc, part_ml, positions, n, d.heads,
                                                                       d.window, int(chunks), out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool attention_head_dim_supported(int head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128;
}

bool attention_use_decode(int64_t n, const AttentionDims& d) {
  return n <= kDecodeMaxTokens && n * (d.heads / d.kv_heads) <= kDecodeMaxRows;
}

size_t attention_decode_workspace_bytes(int64_t n, const AttentionDims& d) {
  const int64_t chunks = (d.capacity + kChunk - 1) / kChunk;
  return size_t(chunks * n * d.heads) * size_t(d.head_dim + 2) * sizeof(float);
}

void launch_attention_decode(const float* q, const __half* k_cache, const __half* v_cache, const int32_t* positions,
                             int64_t n, const AttentionDims& d, float* workspace, float* out, cudaStream_t stream) {
  if (n == 0) return;
  if (!attention_use_decode(n, d))
    throw Error("attention decode (cuda): " + std::to_string(n) + " tokens × group " +
                std::to_string(d.heads / d.kv_heads) + " exceed the decode limits (8 tokens, 64 rows)");
  switch (d.head_dim) {
    case 32: launch_decode_hd<32>(q, k_cache, v_cache, positions, int(n), d, workspace, out, stream); break;
    case 64: launch_decode_hd<64>(q, k_cache, v_cache, positions, int(n), d, workspace, out, stream); break;
    case 96: launch_decode_hd<96>(q, k_cache, v_cache, positions, int(n), d, workspace, out, stream); break;
    case 128: launch_decode_hd<128>(q, k_cache, v_cache, positions, int(n), d, workspace, out, stream); break;
    default: throw Error("attention (cuda): head_dim " + std::to_string(d.head_dim) + " is not 32, 64, 96 or 128");
  }
}

}  // namespace mixq::cuda
