// CPU W4A16 kernels. Steps of the GEMV over one 128-column tile (16 packed words per input row):
//   1. for every input row i of a group: load the tile's 16 words; for nibble slot k, (word & (0xF << 4k))
//      converted to f32 is q·16^k, accumulated as part[k] += x[i]·q·16^k (exact power-of-two scaling, so the
//      shift is folded into the group epilogue); sum_x += x[i].
//   2. group epilogue: acc[k] += s·(part[k]·16^-k − z·sum_x), z from the packed qzeros words (same slots).
//   3. the accumulators are in slot order; the store puts lane w of acc[k] at column 8w + kAwqOrder[k].
// GEMM (n > 1): per [rows × 128] chunk of a group, dequantize once into a tile buffer in slot order, then a
// 4-token register-blocked f32 micro-kernel; columns are restored to natural order when the tile is stored.
#include "awq/w4a16_cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "awq/awq_pack.h"
#include "cpu_features.h"
#include "error.h"
#include "tensor.h"
#include "thread_pool.h"

namespace mixq::awq {

const char* w4_isa_name(W4Isa isa) {
  switch (isa) {
    case W4Isa::Auto: return "auto";
    case W4Isa::Scalar: return "scalar";
    case W4Isa::Avx2: return "avx2";
    case W4Isa::Avx512: return "avx512";
  }
  return "?";
}

static bool cpu_has_avx512() {  // cpuid bits and OS register-state support (cpu_features.cpp)
  const CpuFeatures& c = cpu_caps();
  return c.avx512f && c.avx512bw && c.avx512vl && c.fma;
}
static bool cpu_has_avx2() {
  const CpuFeatures& c = cpu_caps();
  return c.avx2 && c.fma;
}

W4Isa w4_best_isa() {
  static const W4Isa best = cpu_has_avx512() ? W4Isa::Avx512 : cpu_has_avx2() ? W4Isa::Avx2 : W4Isa::Scalar;
  return best;
}

std::vector<W4Isa> w4_available_isas() {
  std::vector<W4Isa> v{W4Isa::Scalar};
  if (cpu_has_avx2()) v.push_back(W4Isa::Avx2);
  if (cpu_has_avx512()) v.push_back(W4Isa::Avx512);
  return v;
}

// ---- layout helpers ---------------------------------------------------------------------------------------

// Position of column o in the kernel-order table row.
static inline int64_t tiled_index(int64_t out, int64_t o) {
  const int64_t full = out / kW4TileCols * kW4TileCols;
  if (o >= full) return o;
  const int64_t t = o / kW4TileCols, c = o % kW4TileCols;
  const int64_t w = c / 8, k = kAwqReverseOrder[c % 8];
  return t * kW4TileCols + 16 * k + w;
}

std::vector<float> make_tiled_scales(const uint16_t* scales16, bool bf16, int64_t groups, int64_t out) {
  std::vector<float> t(static_cast<size_t>(groups * out));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t o = 0; o < out; ++o) {
      const uint16_t h = scales16[g * out + o];
      t[size_t(g * out + tiled_index(out, o))] = bf16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  return t;
}

float tiled_scale_at(const float* scales_tiled, int64_t out, int64_t g, int64_t o) {
  return scales_tiled[g * out + tiled_index(out, o)];
}

static inline float dequant_at(const W4A16Weights& w, int64_t i, int64_t o) {
  const int64_t words = w.out / 8, g = i / w.group;
  const int q = unpack_int4_at(w.qweight + i * words, o);
  const int z = unpack_int4_at(w.qzeros + g * words, o);
  return float(q - z) * tiled_scale_at(w.scales_tiled, w.out, g, o);
}

void w4a16_dequantize(const W4A16Weights& w, float* w_t) {
  for (int64_t i = 0; i < w.in; ++i)
    for (int64_t o = 0; o < w.out; ++o) w_t[i * w.out + o] = dequant_at(w, i, o);
}

void w4a16_weight_row(const W4A16Weights& w, int64_t o, float* dst) {
  for (int64_t i = 0; i < w.in; ++i) dst[i] = dequant_at(w, i, o);
}

void w4a16_reference(const W4A16Weights& w, const float* x, int64_t n, float* y) {
  std::vector<float> w_t(static_cast<size_t>(w.in * w.out));
  w4a16_dequantize(w, w_t.data());
  for (int64_t t = 0; t < n; ++t) {
    float* yt = y + t * w.out;
    std::fill(yt, yt + w.out, 0.0f);
    for (int64_t i = 0; i < w.in; ++i) {
      const float xi = x[t * w.in + i];
      const float* row = w_t.data() + i * w.out;
      for (int64_t o = 0; o < w.out; ++o) yt[o] += xi * row[o];
    }
  }
}

// ---- scalar (portable) --------------------------------------------------------------------------------------

// y[cols c0..c1) for one token; c1 - c0 <= 128, both multiples of 8.
static void gemv_cols_scalar(const W4A16Weights& w, const float* x, float* y, int64_t c0, int64_t c1) {
  const int64_t words = w.out / 8, ncols = c1 - c0;
  float acc[kW4TileCols] = {0}, part[kW4TileCols];
  for (int64_t g = 0; g < w.in / w.group; ++g) {
    std::fill(part, part + ncols, 0.0f);
    float sum_x = 0;
    for (int64_t i = g * w.group; i < (g + 1) * w.group; ++i) {
      const float xi = x[i];
      sum_x += xi;
      const int32_t* row = w.qweight + i * words;
      for (int64_t c = c0 / 8; c < c1 / 8; ++c) {
        const uint32_t word = uint32_t(row[c]);
        for (int k = 0; k < 8; ++k) part[8 * c + kAwqOrder[k] - c0] += xi * float((word >> (4 * k)) & 0xF);
      }
    }
    const int32_t* zrow = w.qzeros + g * words;
    for (int64_t o = c0; o < c1; ++o)
      acc[o - c0] += tiled_scale_at(w.scales_tiled, w.out, g, o) *
                     (part[o - c0] - float(unpack_int4_at(zrow, o)) * sum_x);
  }
  std::copy(acc, acc + ncols, y + c0);
}

// ---- AVX-512 ------------------------------------------------------------------------------------------------

#if defined(__x86_64__)
#define MIXQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#define MIXQ_AVX2 __attribute__((target("avx2,fma")))

// Lane w of acc[k] (slot order) → column 8w + kAwqOrder[k] of the tile.
static inline void store_tile_natural(const float* slot_order, float* y_tile) {
  for (int k = 0; k < 8; ++k)
    for (int w = 0; w < 16; ++w) y_tile[8 * w + kAwqOrder[k]] = slot_order[16 * k + w];
}

// Tiles [tile_b, tile_e) for one token. Group-major: for each group, the tiles are walked two at a time
// (128 contiguous bytes per input row), so a group's rows stay in the TLB/L2 while all tiles use them.
// acc_mem: [tiles][128] slot-order accumulators kept in memory between groups.
MIXQ_AVX512 static void gemv_tiles_avx512(const W4A16Weights& w, const float* x, float* y, int64_t tile_b,
                                          int64_t tile_e, float* acc_mem) {
  const int64_t words = w.out / 8, ntiles = tile_e - tile_b;
  std::fill(acc_mem, acc_mem + ntiles * kW4TileCols, 0.0f);
  for (int64_t g = 0; g < w.in / w.group; ++g) {
    const int64_t i0 = g * w.group, i1 = i0 + w.group;
    float sum_x = 0;
    for (int64_t i = i0; i < i1; ++i) sum_x += x[i];
    const __m512 sx = _mm512_set1_ps(sum_x);
    for (int64_t tile = tile_b; tile < tile_e; tile += 2) {
      const int nt = tile + 1 < tile_e ? 2 : 1;
      __m512 part[2][8];
      for (int a = 0; a < 2; ++a)
        for (int k = 0; k < 8; ++k) part[a][k] = _mm512_setzero_ps();
      const int32_t* qw = w.qweight + tile * 16;
      for (int64_t i = i0; i < i1; ++i) {
        const __m512 xb = _mm512_set1_ps(x[i]);
        for (int a = 0; a < nt; ++a) {
          const __m512i v = _mm512_loadu_si512(qw + i * words + 16 * a);
#define MIXQ_SLOT(k) \
  part[a][k] = _mm512_fmadd_ps(_mm512_cvtepu32_ps(_mm512_and_si512(v, _mm512_set1_epi32(int32_t(0xFu << (4 * k))))), xb, part[a][k]);
          MIXQ_SLOT(0) MIXQ_SLOT(1) MIXQ_SLOT(2) MIXQ_SLOT(3) MIXQ_SLOT(4) MIXQ_SLOT(5) MIXQ_SLOT(6) MIXQ_SLOT(7)
#undef MIXQ_SLOT
        }
      }
      for (int a = 0; a < nt; ++a) {
        const __m512i zv = _mm512_loadu_si512(w.qzeros + g * words + (tile + a) * 16);
        const float* s = w.scales_tiled + g * w.out + (tile + a) * kW4TileCols;
        float* acc = acc_mem + (tile + a - tile_b) * kW4TileCols;
        for (int k = 0; k < 8; ++k) {
          const __m512 zk = _mm512_cvtepi32_ps(
              _mm512_and_si512(_mm512_srlv_epi32(zv, _mm512_set1_epi32(4 * k)), _mm512_set1_epi32(0xF)));
          const __m512 pk = _mm512_mul_ps(part[a][k], _mm512_set1_ps(1.0f / float(1u << (4 * k))));
          _mm512_storeu_ps(acc + 16 * k, _mm512_fmadd_ps(_mm512_loadu_ps(s + 16 * k), _mm512_fnmadd_ps(zk, sx, pk),
                                                         _mm512_loadu_ps(acc + 16 * k)));
        }
      }
    }
  }
  for (int64_t t = 0; t < ntiles; ++t) store_tile_natural(acc_mem + t * kW4TileCols, y + (tile_b + t) * kW4TileCols);
}

// Dequantizes rows [r0, r0+R) of a tile into wd [R][128] (slot order).
MIXQ_AVX512 static void dequant_tile_avx512(const W4A16Weights& w, int64_t tile, int64_t r0, int64_t R, float* wd) {
  const int64_t words = w.out / 8, g = r0 / w.group;
  const __m512i zv = _mm512_loadu_si512(w.qzeros + g * words + tile * 16);
  const float* s = w.scales_tiled + g * w.out + tile * kW4TileCols;
  __m512 zk[8], sk[8];
  for (int k = 0; k < 8; ++k) {
    zk[k] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(zv, _mm512_set1_epi32(4 * k)), _mm512_set1_epi32(0xF)));
    sk[k] = _mm512_loadu_ps(s + 16 * k);
  }
  for (int64_t r = 0; r < R; ++r) {
    const __m512i v = _mm512_loadu_si512(w.qweight + (r0 + r) * words + tile * 16);
    float* dst = wd + r * kW4TileCols;
    for (int k = 0; k < 8; ++k) {
      const __m512 q = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(4 * k)), _mm512_set1_epi32(0xF)));
      _mm512_store_ps(dst + 16 * k, _mm512_mul_ps(_mm512_sub_ps(q, zk[k]), sk[k]));
    }
  }
}

// yp[t][0..128) += x[t][r0..r0+R) · wd for tokens [0, nt); x rows have stride ldx.
MIXQ_AVX512 static void tile_matmul_avx512(const float* x, int64_t ldx, int64_t nt, const float* wd, int64_t R, float* yp) {
  int64_t t = 0;
  for (; t + 4 <= nt; t += 4) {
    for (int h = 0; h < 2; ++h) {
      __m512 acc[4][4];
      for (int a = 0; a < 4; ++a)
        for (int j = 0; j < 4; ++j) acc[a][j] = _mm512_loadu_ps(yp + (t + a) * kW4TileCols + 64 * h + 16 * j);
      for (int64_t r = 0; r < R; ++r) {
        const float* wr = wd + r * kW4TileCols + 64 * h;
        const __m512 w0 = _mm512_load_ps(wr), w1 = _mm512_load_ps(wr + 16), w2 = _mm512_load_ps(wr + 32),
                     w3 = _mm512_load_ps(wr + 48);
        for (int a = 0; a < 4; ++a) {
          const __m512 xb = _mm512_set1_ps(x[(t + a) * ldx + r]);
          acc[a][0] = _mm512_fmadd_ps(xb, w0, acc[a][0]);
          acc[a][1] = _mm512_fmadd_ps(xb, w1, acc[a][1]);
          acc[a][2] = _mm512_fmadd_ps(xb, w2, acc[a][2]);
          acc[a][3] = _mm512_fmadd_ps(xb, w3, acc[a][3]);
        }
      }
      for (int a = 0; a < 4; ++a)
        for (int j = 0; j < 4; ++j) _mm512_storeu_ps(yp + (t + a) * kW4TileCols + 64 * h + 16 * j, acc[a][j]);
    }
  }
  for (; t < nt; ++t) {
    __m512 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_loadu_ps(yp + t * kW4TileCols + 16 * j);
    for (int64_t r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + r]);
      for (int j = 0; j < 8; ++j) acc[j] = _mm512_fmadd_ps(xb, _mm512_load_ps(wd + r * kW4TileCols + 16 * j), acc[j]);
    }
    for (int j = 0; j < 8; ++j) _mm512_storeu_ps(yp + t * kW4TileCols + 16 * j, acc[j]);
  }
}

// ---- AVX2 ---------------------------------------------------------------------------------------------------

MIXQ_AVX2 static void gemv_tile_avx2(const W4A16Weights& w, const float* x, float* y, int64_t tile) {
  const int64_t words = w.out / 8;
  alignas(32) float acc[kW4TileCols] = {0};
  for (int64_t g = 0; g < w.in / w.group; ++g) {
    float sum_x = 0;
    for (int64_t i = g * w.group; i < (g + 1) * w.group; ++i) sum_x += x[i];
    const float* s = w.scales_tiled + g * w.out + tile * kW4TileCols;
    for (int half = 0; half < 2; ++half) {  // words 0..7, then 8..15 of the tile
      const int32_t* qw = w.qweight + tile * 16 + half * 8;
      __m256 part[8];
      for (int k = 0; k < 8; ++k) part[k] = _mm256_setzero_ps();
      for (int64_t i = g * w.group; i < (g + 1) * w.group; ++i) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qw + i * words));
        const __m256 xb = _mm256_set1_ps(x[i]);
        // Slots 0..6 masked in place (values < 2^28 convert exactly as signed); slot 7 shifted down.
#define MIXQ_SLOT(k) \
  part[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(int32_t(0xFu << (4 * k))))), xb, part[k]);
        MIXQ_SLOT(0) MIXQ_SLOT(1) MIXQ_SLOT(2) MIXQ_SLOT(3) MIXQ_SLOT(4) MIXQ_SLOT(5) MIXQ_SLOT(6)
#undef MIXQ_SLOT
        part[7] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 28)), xb, part[7]);
      }
      const __m256i zv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qzeros + g * words + tile * 16 + half * 8));
      const __m256 sx = _mm256_set1_ps(sum_x);
      for (int k = 0; k < 8; ++k) {
        const __m256 zk = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(zv, _mm256_set1_epi32(4 * k)), _mm256_set1_epi32(0xF)));
        const float unscale = k == 7 ? 1.0f : 1.0f / float(1u << (4 * k));
        const __m256 pk = _mm256_mul_ps(part[k], _mm256_set1_ps(unscale));
        float* a = acc + 16 * k + 8 * half;
        _mm256_store_ps(a, _mm256_fmadd_ps(_mm256_loadu_ps(s + 16 * k + 8 * half), _mm256_fnmadd_ps(zk, sx, pk), _mm256_load_ps(a)));
      }
    }
  }
  store_tile_natural(acc, y + tile * kW4TileCols);
}

MIXQ_AVX2 static void dequant_tile_avx2(const W4A16Weights& w, int64_t tile, int64_t r0, int64_t R, float* wd) {
  const int64_t words = w.out / 8, g = r0 / w.group;
  const float* s = w.scales_tiled + g * w.out + tile * kW4TileCols;
  for (int half = 0; half < 2; ++half) {
    const __m256i zv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qzeros + g * words + tile * 16 + half * 8));
    for (int64_t r = 0; r < R; ++r) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qweight + (r0 + r) * words + tile * 16 + half * 8));
      float* dst = wd + r * kW4TileCols + 8 * half;
      for (int k = 0; k < 8; ++k) {
        const __m256i sh = _mm256_set1_epi32(4 * k), m = _mm256_set1_epi32(0xF);
        const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, sh), m));
        const __m256 z = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(zv, sh), m));
        _mm256_store_ps(dst + 16 * k, _mm256_mul_ps(_mm256_sub_ps(q, z), _mm256_loadu_ps(s + 16 * k + 8 * half)));
      }
    }
  }
}

MIXQ_AVX2 static void tile_matmul_avx2(const float* x, int64_t ldx, int64_t nt, const float* wd, int64_t R, float* yp) {
  int64_t t = 0;
  for (; t + 4 <= nt; t += 4) {
    for (int c = 0; c < 8; ++c) {  // 16-column blocks
      __m256 acc[4][2];
      for (int a = 0; a < 4; ++a)
        for (int j = 0; j < 2; ++j) acc[a][j] = _mm256_loadu_ps(yp + (t + a) * kW4TileCols + 16 * c + 8 * j);
      for (int64_t r = 0; r < R; ++r) {
        const __m256 w0 = _mm256_load_ps(wd + r * kW4TileCols + 16 * c), w1 = _mm256_load_ps(wd + r * kW4TileCols + 16 * c + 8);
        for (int a = 0; a < 4; ++a) {
          const __m256 xb = _mm256_set1_ps(x[(t + a) * ldx + r]);
          acc[a][0] = _mm256_fmadd_ps(xb, w0, acc[a][0]);
          acc[a][1] = _mm256_fmadd_ps(xb, w1, acc[a][1]);
        }
      }
      for (int a = 0; a < 4; ++a)
        for (int j = 0; j < 2; ++j) _mm256_storeu_ps(yp + (t + a) * kW4TileCols + 16 * c + 8 * j, acc[a][j]);
    }
  }
  for (; t < nt; ++t)
    for (int64_t r = 0; r < R; ++r) {
      const __m256 xb = _mm256_set1_ps(x[t * ldx + r]);
      for (int j = 0; j < 16; ++j) {
        float* a = yp + t * kW4TileCols + 8 * j;
        _mm256_storeu_ps(a, _mm256_fmadd_ps(xb, _mm256_load_ps(wd + r * kW4TileCols + 8 * j), _mm256_loadu_ps(a)));
      }
    }
}
#endif  // __x86_64__

// ---- dispatch -----------------------------------------------------------------------------------------------

// Tokens [t0, t1) of one full tile through the tiled GEMM.
static void gemm_tile(const W4A16Weights& w, const float* x, int64_t t0, int64_t t1, float* y, int64_t tile, W4Isa isa) {
#if defined(__x86_64__)
  const int64_t nt = t1 - t0;
  const int64_t R = std::gcd(w.group, int64_t(128));  // rows dequantized at once: within one group, ≤ 128
  thread_local std::vector<float, std::allocator<float>> buf;
  const size_t need = size_t(R * kW4TileCols + nt * kW4TileCols + 16);
  if (buf.size() < need) buf.resize(need);
  float* wd = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
  float* yp = wd + R * kW4TileCols;
  std::fill(yp, yp + nt * kW4TileCols, 0.0f);
  for (int64_t r0 = 0; r0 < w.in; r0 += R) {
    if (isa == W4Isa::Avx512) {
      dequant_tile_avx512(w, tile, r0, R, wd);
      tile_matmul_avx512(x + t0 * w.in + r0, w.in, nt, wd, R, yp);
    } else {
      dequant_tile_avx2(w, tile, r0, R, wd);
      tile_matmul_avx2(x + t0 * w.in + r0, w.in, nt, wd, R, yp);
    }
  }
  for (int64_t t = 0; t < nt; ++t) store_tile_natural(yp + t * kW4TileCols, y + (t0 + t) * w.out + tile * kW4TileCols);
#else
  (void)w; (void)x; (void)t0; (void)t1; (void)y; (void)tile; (void)isa;
#endif
}

void w4a16_forward(const W4A16Weights& w, const float* x, int64_t n, float* y, ThreadPool& pool, W4Isa isa) {
  if (isa == W4Isa::Auto) isa = w4_best_isa();
  const int64_t full_tiles = w.out / kW4TileCols;
  const bool tail = w.out % kW4TileCols != 0;
  const int64_t col_items = full_tiles + (tail ? 1 : 0);
  auto cols_scalar = [&](const float* xt, float* yt, int64_t c0, int64_t c1) { gemv_cols_scalar(w, xt, yt, c0, c1); };
  if (n == 1 || isa == W4Isa::Scalar) {
    // GEMV per token (the scalar fallback also runs GEMM as repeated GEMV).
    pool.parallel_for(col_items * n, [&](int64_t b, int64_t e) {
      for (int64_t item = b; item < e; ++item) {
        const int64_t t = item / col_items, tile = item % col_items;
        const float* xt = x + t * w.in;
        float* yt = y + t * w.out;
        if (tile == full_tiles) { cols_scalar(xt, yt, full_tiles * kW4TileCols, w.out); continue; }
#if defined(__x86_64__)
        if (isa == W4Isa::Avx512) {
          // Consecutive full tiles of this token in one call (group-major walk).
          int64_t tile_e = tile + 1;
          while (item + 1 < e && tile_e < full_tiles && (item + 1) / col_items == t) { ++item; ++tile_e; }
          thread_local std::vector<float> acc_mem;
          acc_mem.resize(static_cast<size_t>((tile_e - tile) * kW4TileCols));
          gemv_tiles_avx512(w, xt, yt, tile, tile_e, acc_mem.data());
          continue;
        }
        if (isa == W4Isa::Avx2) { gemv_tile_avx2(w, xt, yt, tile); continue; }
#endif
        cols_scalar(xt, yt, tile * kW4TileCols, (tile + 1) * kW4TileCols);
      }
    });
    return;
  }
  // GEMM: work items = column tiles × token blocks, enough items to keep every thread busy.
  const int64_t want_items = 4 * int64_t(pool.size());
  int64_t token_blocks = std::max<int64_t>(1, (want_items + col_items - 1) / col_items);
  int64_t block = std::max<int64_t>(8, (n + token_blocks - 1) / token_blocks);
  block = std::min<int64_t>(block, 512);
  token_blocks = (n + block - 1) / block;
  pool.parallel_for(col_items * token_blocks, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t tb = item / col_items, tile = item % col_items;
      const int64_t t0 = tb * block, t1 = std::min(n, t0 + block);
      if (tile == full_tiles) {
        for (int64_t t = t0; t < t1; ++t) cols_scalar(x + t * w.in, y + t * w.out, full_tiles * kW4TileCols, w.out);
      } else {
        gemm_tile(w, x, t0, t1, y, tile, isa);
      }
    }
  });
}

}  // namespace mixq::awq
