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
#include <cmath>
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

// Rows of a GEMV panel (a group of fewer rows is one panel). 64 measured best with the prefetch cursor on the
// Zen 4 VM (2 threads, one expert each): 32 and 64 stream alike, 64 spills the partial sums half as often.
constexpr int64_t kPanelRows = 64;

// Lane w of acc[k] (slot order) → column 8w + kAwqOrder[k] of the tile.
static inline void store_tile_natural(const float* slot_order, float* y_tile) {
  for (int k = 0; k < 8; ++k)
    for (int w = 0; w < 16; ++w) y_tile[8 * w + kAwqOrder[k]] = slot_order[16 * k + w];
}

// Nibble → f32 with one AND and no conversion. An f32 whose top byte is zero has the value (bits 0..23 as an
// integer) · 2^-149 exactly, across the denormal/normal boundary (exponent field 0 or 1). So for a word v, the
// bit pattern v & (0xF << 4k) *is* the float q · 16^k · 2^-149 for slots k = 0..5 (bits 0..23); slots 6 and 7
// are taken from v >> 8 the same way (q · 16^4, q · 16^5). x is pre-scaled by 2^K (exact) so that the products
// x · 2^K · q · 16^k · 2^-149 are normal numbers again and the f32 accumulation keeps full precision; the group
// epilogue multiplies by 2^(149 − K − 4k') (k' = the slot's effective shift), also exact. The denormal operands
// must not be flushed: the kernel runs with MXCSR.DAZ clear (DazOff). Zen 4 takes them at full FMA speed
// (measured: 53 weights/ns/core for AND+FMA vs 36 for AND+convert+FMA).
constexpr int kSlotShift[8] = {0, 4, 8, 12, 16, 20, 16, 20};  // bit position of slot k's nibble in v or v >> 8

// Clears MXCSR.DAZ (denormals-are-zero) for this thread while alive; MXCSR is per thread, so each work item
// sets it. FTZ is left alone: every product is normal, a flushed result could only be one far below 2^-126.
struct DazOff {
  unsigned saved;
  DazOff() : saved(_mm_getcsr()) {
    if (saved & 0x40u) _mm_setcsr(saved & ~0x40u);
  }
  ~DazOff() {
    if (saved & 0x40u) _mm_setcsr(saved);
  }
};

// One panel (rows [p0, p1) of group g) × NT tiles starting at `tile`, for one token: the NT×8 slot accumulators of
// the group's partial sums live in registers (from `part` unless the panel is the group's first); after the
// group's last panel the epilogue adds s · Σx·(q − z) into `acc`, else they go back to `part`.
// xs: x · 2^K (indexed like x); unscale[k] = 2^(149 − K − kSlotShift[k]). pf: the prefetch cursor (advanced by the
// bytes read), pf_end: where it stops.
template <int NT>
MIXQ_AVX512 static inline void gemv_panel_avx512(const W4A16Weights& w, const float* xs, const float* unscale,
                                                 int64_t g, int64_t p0, int64_t p1, int64_t tile, bool first,
                                                 bool last, __m512 sx, float* acc, float* part, const char*& pf,
                                                 const char* pf_end) {
  const int64_t words = w.out / 8;
  float* pt = part + tile * kW4TileCols;
  __m512 pa[NT][8];
  for (int a = 0; a < NT; ++a)
    for (int k = 0; k < 8; ++k) pa[a][k] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(pt + a * kW4TileCols + 16 * k);
  const int32_t* qw = w.qweight + tile * 16;
  for (int64_t i = p0; i < p1; ++i) {
    if (pf < pf_end)
      for (int a = 0; a < NT; ++a) _mm_prefetch(pf + 64 * a, _MM_HINT_T1);
    pf += 64 * NT;
    const __m512 xb = _mm512_set1_ps(xs[i]);
    for (int a = 0; a < NT; ++a) {
      const __m512i v = _mm512_loadu_si512(qw + i * words + 16 * a);
      const __m512i v8 = _mm512_srli_epi32(v, 8);
      for (int k = 0; k < 8; ++k) {
        const __m512i bits = _mm512_and_si512(k < 6 ? v : v8, _mm512_set1_epi32(int32_t(0xFu << kSlotShift[k])));
        pa[a][k] = _mm512_fmadd_ps(_mm512_castsi512_ps(bits), xb, pa[a][k]);
      }
    }
  }
  if (!last) {
    for (int a = 0; a < NT; ++a)
      for (int k = 0; k < 8; ++k) _mm512_storeu_ps(pt + a * kW4TileCols + 16 * k, pa[a][k]);
    return;
  }
  // Group epilogue: acc += s · (unscale · part − z · Σx), z from the packed qzeros word (same slots).
  for (int a = 0; a < NT; ++a) {
    const __m512i zv = _mm512_loadu_si512(w.qzeros + g * words + (tile + a) * 16);
    const float* s = w.scales_tiled + g * w.out + (tile + a) * kW4TileCols;
    float* ac = acc + (tile + a) * kW4TileCols;
    for (int k = 0; k < 8; ++k) {
      const __m512 zk = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(zv, 4 * k), _mm512_set1_epi32(0xF)));
      const __m512 pk = _mm512_mul_ps(pa[a][k], _mm512_set1_ps(unscale[k]));
      _mm512_storeu_ps(ac + 16 * k, _mm512_fmadd_ps(_mm512_loadu_ps(s + 16 * k), _mm512_fnmadd_ps(zk, sx, pk),
                                                    _mm512_loadu_ps(ac + 16 * k)));
    }
  }
}

// GEMV over the groups [g0, g1) (a K-chunk: one contiguous run of whole rows) and every full tile, one token.
// acc: [tiles][128] slot-order f32 accumulators (+=); part: [tiles][128] scratch for a group's partial sums.
// Walk: group → panel of kPanelRows rows → tile pair → row, so a panel's rows are read as a few short streams and
// the panel is done before the next starts. A software prefetch cursor runs sequentially ahead through the chunk
// into L2 (a panel plus 64 KiB ahead): on the 2-core Zen 4 VM, 16 interleaved row streams read at 10–20 GB/s with
// the hardware prefetchers alone and at ≈ 24 GB/s with this cursor (one thread; sequential reading ≈ 26 GB/s).
MIXQ_AVX512 static void gemv_groups_avx512(const W4A16Weights& w, const float* x, int64_t g0, int64_t g1, float* acc,
                                           float* part, float* xs) {
  DazOff daz_off;
  const int64_t words = w.out / 8, tiles = w.out / kW4TileCols;
  // Scale 2^K: K = 90 keeps x · 2^K · 2^-149 normal for |x| ≥ 2^-67; lowered when max|x| · 2^K would pass 2^126.
  float max_abs = 0;
  for (int64_t i = g0 * w.group; i < g1 * w.group; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  int exponent = 0;
  std::frexp(max_abs, &exponent);  // max_abs < 2^exponent
  const int K = std::isfinite(max_abs) ? std::min(90, 126 - exponent) : 0;
  const float scale = std::ldexp(1.0f, K);
  float unscale[8];
  for (int k = 0; k < 8; ++k) unscale[k] = std::ldexp(1.0f, 149 - K - kSlotShift[k]);
  for (int64_t i = g0 * w.group; i < g1 * w.group; ++i) xs[i] = x[i] * scale;
  const char* pf = reinterpret_cast<const char*>(w.qweight + g0 * w.group * words) + kPanelRows * words * 4 + (64 << 10);
  const char* const pf_end = reinterpret_cast<const char*>(w.qweight + w.in * words);
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t i0 = g * w.group, i1 = i0 + w.group;
    float sum_x = 0;
    for (int64_t i = i0; i < i1; ++i) sum_x += x[i];
    const __m512 sx = _mm512_set1_ps(sum_x);
    for (int64_t p0 = i0; p0 < i1; p0 += kPanelRows) {
      const int64_t p1 = std::min(p0 + kPanelRows, i1);
      int64_t tile = 0;
      for (; tile + 2 <= tiles; tile += 2)
        gemv_panel_avx512<2>(w, xs, unscale, g, p0, p1, tile, p0 == i0, p1 == i1, sx, acc, part, pf, pf_end);
      if (tile < tiles)
        gemv_panel_avx512<1>(w, xs, unscale, g, p0, p1, tile, p0 == i0, p1 == i1, sx, acc, part, pf, pf_end);
    }
  }
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

// K-chunks of the AVX-512 GEMV: the rows are split into this many runs of whole groups, fixed by the shape and
// never by the thread count, so every output is the same sum in the same order on any pool; each chunk is one
// contiguous region of the matrix, streamed by one thread. ~1024 rows a chunk, at most 8 (a few % of extra
// partial-output traffic at most).
static int64_t gemv_kchunks(const W4A16Weights& w) {
  return std::max<int64_t>(1, std::min<int64_t>({w.in / w.group, int64_t(8), w.in / 1024}));
}

#if defined(__x86_64__)
// y = x · Wᵀ for one token: work items = the K-chunks over the full tiles, plus one for the tail columns.
static void gemv_avx512(const W4A16Weights& w, const float* x, float* y, ThreadPool& pool) {
  const int64_t tiles = w.out / kW4TileCols, full = tiles * kW4TileCols, groups = w.in / w.group;
  const int64_t chunks = tiles > 0 ? gemv_kchunks(w) : 0;
  const int64_t items = chunks + (full < w.out ? 1 : 0);
  thread_local std::vector<float> partial;  // [chunks][full] chunk outputs, natural order (chunks > 1)
  if (chunks > 1 && partial.size() < size_t(chunks * full)) partial.resize(size_t(chunks * full));
  float* const chunk_out = chunks > 1 ? partial.data() : y;
  pool.parallel_for(items, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scratch;  // acc [full] + part [full], reused across calls
    if (scratch.size() < size_t(2 * full + w.in)) scratch.resize(size_t(2 * full + w.in));
    for (int64_t item = b; item < e; ++item) {
      if (item == chunks) {
        gemv_cols_scalar(w, x, y, full, w.out);
        continue;
      }
      float* acc = scratch.data();
      std::fill(acc, acc + full, 0.0f);
      gemv_groups_avx512(w, x, groups * item / chunks, groups * (item + 1) / chunks, acc, acc + full, acc + 2 * full);
      float* out = chunk_out + (chunks > 1 ? item * full : 0);
      for (int64_t t = 0; t < tiles; ++t) store_tile_natural(acc + t * kW4TileCols, out + t * kW4TileCols);
    }
  });
  if (chunks > 1) {  // chunk outputs summed in chunk order
    for (int64_t o = 0; o < full; ++o) {
      float sum = partial[size_t(o)];
      for (int64_t c = 1; c < chunks; ++c) sum += partial[size_t(c * full + o)];
      y[o] = sum;
    }
  }
}
#endif

void w4a16_forward(const W4A16Weights& w, const float* x, int64_t n, float* y, ThreadPool& pool, W4Isa isa) {
  if (isa == W4Isa::Auto) isa = w4_best_isa();
  const int64_t full_tiles = w.out / kW4TileCols;
  const bool tail = w.out % kW4TileCols != 0;
  const int64_t col_items = full_tiles + (tail ? 1 : 0);
  auto cols_scalar = [&](const float* xt, float* yt, int64_t c0, int64_t c1) { gemv_cols_scalar(w, xt, yt, c0, c1); };
#if defined(__x86_64__)
  if (n == 1 && isa == W4Isa::Avx512 ) {
    gemv_avx512(w, x, y, pool);
    return;
  }
#endif
  if (n == 1 || isa == W4Isa::Scalar) {
    // GEMV per token and column tile (the scalar fallback also runs GEMM as repeated GEMV).
    pool.parallel_for(col_items * n, [&](int64_t b, int64_t e) {
      for (int64_t item = b; item < e; ++item) {
        const int64_t t = item / col_items, tile = item % col_items;
        const float* xt = x + t * w.in;
        float* yt = y + t * w.out;
        if (tile == full_tiles) { cols_scalar(xt, yt, full_tiles * kW4TileCols, w.out); continue; }
#if defined(__x86_64__)
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
