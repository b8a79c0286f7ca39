// CPU W4A16 kernels. The SIMD GEMV (1–8 tokens, decode), per work item = K-chunk of whole rows × column block:
//   1. scale x by an exact 2^K chosen from max|x| (scale_chunk), sum_x per group;
//   2. walk group → 64-row panel → strip of 1–2 tiles (16 packed words = 128 columns each) → row, with a software
//      prefetch cursor running sequentially ahead; per row and slot k, the nibble is isolated in place by one AND
//      (k < 6 from the word, 6 and 7 from word >> 8) and read as f32 either converted (q·2^shift) or as it is
//      (a denormal-range float q·2^shift·2^-149), then part[k] += x·2^K · that (FMA);
//   3. group epilogue: acc[k] += s · (part[k] · 2^(−K − shift [+ 149]) − z · sum_x), z from the packed qzeros;
//   4. the accumulators are in slot order; the store puts lane w of acc[k] at column 8w + kAwqOrder[k]; K-chunk
//      outputs are summed in chunk order.
// GEMM (more tokens): per [rows × 128] chunk of a group, dequantize once into a tile buffer in slot order, then a
// 4-token register-blocked f32 micro-kernel; columns are restored to natural order when the tile is stored.
// Scalar: per column block, plain loops (the portable fallback; the tests' oracle is w4a16_reference).
#include "awq/w4a16_cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
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
  // MIXQ_CPU_ISA=scalar|avx2 caps the level, as for the dense kernels (linear_dense.cpp); it never raises it.
  static const W4Isa best = [] {
    const W4Isa top = cpu_has_avx512() ? W4Isa::Avx512 : cpu_has_avx2() ? W4Isa::Avx2 : W4Isa::Scalar;
    const char* cap = std::getenv("MIXQ_CPU_ISA");
    if (cap && std::strcmp(cap, "scalar") == 0) return W4Isa::Scalar;
    if (cap && std::strcmp(cap, "avx2") == 0 && top == W4Isa::Avx512) return W4Isa::Avx2;
    return top;
  }();
  return best;
}

std::vector<W4Isa> w4_available_isas() {
  std::vector<W4Isa> v{W4Isa::Scalar};
  if (cpu_has_avx2()) v.push_back(W4Isa::Avx2);
  if (cpu_has_avx512()) v.push_back(W4Isa::Avx512);
  return v;
}

const char* w4_nibble_name(W4Nibble route) {
  switch (route) {
    case W4Nibble::Auto: return "auto";
    case W4Nibble::Convert: return "convert";
    case W4Nibble::Denormal: return "denormal";
  }
  return "?";
}

#if defined(__x86_64__)
static bool measure_denormal_fma_fast();
#endif

bool w4_denormal_fma_fast() {
#if defined(__x86_64__)
  static const bool fast = cpu_has_avx2() && measure_denormal_fma_fast();
  return fast;
#else
  return false;
#endif
}

W4Nibble w4_nibble_route() {
  static const W4Nibble route = [] {
    const char* env = std::getenv("MIXQ_W4_NIBBLE");
    if (env && std::strcmp(env, "convert") == 0) return W4Nibble::Convert;
    if (env && std::strcmp(env, "denormal") == 0) return W4Nibble::Denormal;
    return w4_denormal_fma_fast() ? W4Nibble::Denormal : W4Nibble::Convert;
  }();
  return route;
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

// ---- AVX-512 and AVX2 ----------------------------------------------------------------------------------------

#if defined(__x86_64__)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports the _mm512_undefined_*() placeholder inside its own intrinsics (srli, srlv, cvtepi32) as "may be
// used uninitialized" at every inlined call: a false positive of the headers. Silenced for the SIMD kernels only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
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

// ---- GEMV (1–8 tokens) ----------------------------------------------------------------------------------------
//
// Nibble → f32. Slot k of word v is isolated in place as bits = (k < 6 ? v : v >> 8) & (0xF << kSlotShift[k]),
// an integer q · 2^shift below 2^24; then either
//   Convert:  int → float conversion: exactly q · 2^shift (one more instruction; any CPU), or
//   Denormal: the bits read as a float as they are. An f32 whose top byte is zero is (bits 0..23 as an integer)
//             · 2^-149 exactly, across the denormal/normal boundary, so this *is* q · 2^shift · 2^-149 with no
//             instruction at all. It needs FMA at full speed on denormal operands (AMD Zen 4: 53 weights/ns/core
//             against 36 converting; the Intel Xeon of the GPU hosts: 50–100× slower, microcode assists), so it is
//             chosen by measuring (w4_nibble_route), and MXCSR.DAZ is cleared while it runs (DazOff).
// Either way x is pre-scaled by an exact 2^K chosen from max|x| so that every product of a relevant x is a normal
// f32 far from overflow (Denormal: max|x|·2^K ≈ 2^126; Convert: ≈ 2^64), and the group epilogue multiplies by the
// exact inverse 2^(−K − shift [+ 149]). Results are the same up to f32 rounding order for any |x| (tests: 2^±100).
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

// Per-chunk scaling of x (see above), one 2^K for the chunk's n tokens (a power of two, so each token's results are
// the same bits as alone): xs[t·in + i] = x[t·in + i] · 2^K for rows [r0, r1), unscale[k] = 2^(−K − shift_k [+ 149]).
static void scale_chunk(const float* x, int64_t n, int64_t in, int64_t r0, int64_t r1, bool denormal, float* xs,
                        float* unscale) {
  float max_abs = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = r0; i < r1; ++i) max_abs = std::max(max_abs, std::fabs(x[t * in + i]));
  int e = 0;
  std::frexp(max_abs, &e);  // max_abs < 2^e
  // Clamped so that unscale stays a normal f32 (2^-126 ≤ unscale): only very small x reach the clamp.
  const int K = !std::isfinite(max_abs) ? 0 : denormal ? std::min(126 - e, 255) : std::min(64 - e, 106);
  const double scale = std::ldexp(1.0, K);  // double: 2^K can pass the f32 range when x is tiny
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = r0; i < r1; ++i) xs[t * in + i] = float(double(x[t * in + i]) * scale);
  for (int k = 0; k < 8; ++k) unscale[k] = float(std::ldexp(1.0, (denormal ? 149 : 0) - K - kSlotShift[k]));
}

// Software prefetch cursor over a work item's region of the matrix (rows from its first to the end, bytes
// [b0, b0 + width) of each row), running sequentially ahead of the reads in the order they consume the region.
struct PrefetchCursor {
  const char* row;  // the cursor's row, at byte b0
  const char* end;  // row pointer one past the last row
  int64_t col;      // offset within the region's part of the row
  int64_t width;    // region bytes per row
  int64_t stride;   // bytes per row
  // Starts a panel plus 64 KiB of the region ahead of row r0 (measured best; see the walk below, kPanelRows).
  PrefetchCursor(const W4A16Weights& w, int64_t r0, int64_t tile_b, int64_t tile_e) {
    stride = w.out / 8 * 4;
    width = (tile_e - tile_b) * 64;
    const char* base = reinterpret_cast<const char*>(w.qweight) + tile_b * 64;
    end = base + w.in * stride;
    const int64_t ahead = kPanelRows * width + (64 << 10);
    row = base + (r0 + ahead / width) * stride;
    col = ahead % width;
  }
  const char* at() const { return row < end ? row + col : nullptr; }
  void advance(int64_t bytes) {
    col += bytes;
    while (col >= width) {
      col -= width;
      row += stride;
    }
  }
};

// One panel (rows [p0, p1) of group g) × NT tiles starting at `tile`, for T tokens: the slot accumulators of the
// group's partial sums (T tokens × NT tiles × S slots, slots k0..k0+S in turn, at most 16 registers) live in
// registers within the panel (from `part` unless it is the group's first); after the group's last panel the
// epilogue adds s · Σx·(q − z) into `acc`, else they go back to `part`. With S < 8 the panel's words are read once
// from memory and again from L1 for the later slots.
// xs: [T][in] x · 2^K; unscale: see scale_chunk; sx: [T] Σx over the group; acc, part: [T][full] (slot order within
// each 128-column tile). pf: the prefetch cursor (advanced by the bytes read).
template <int T, int NT, int S, bool DENORMAL>
MIXQ_AVX512 static inline void gemv_panel_avx512(const W4A16Weights& w, const float* xs, const float* unscale,
                                                 int64_t g, int64_t p0, int64_t p1, int64_t tile, bool first,
                                                 bool last, const float* sx, float* acc, float* part, int64_t full,
                                                 PrefetchCursor& pf) {
  static_assert(T * NT * S <= 16 && 8 % S == 0, "accumulators must fit in registers");
  const int64_t words = w.out / 8;
  const int32_t* qw = w.qweight + tile * 16;
  for (int k0 = 0; k0 < 8; k0 += S) {
    __m512 pa[T][NT][S];
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t)
      #pragma GCC unroll 16
      for (int a = 0; a < NT; ++a)
        #pragma GCC unroll 16
        for (int j = 0; j < S; ++j)
          pa[t][a][j] = first ? _mm512_setzero_ps()
                              : _mm512_loadu_ps(part + t * full + (tile + a) * kW4TileCols + 16 * (k0 + j));
    for (int64_t i = p0; i < p1; ++i) {
      if (k0 == 0) {
        if (const char* ahead = pf.at())
          for (int a = 0; a < NT; ++a) _mm_prefetch(ahead + 64 * a, _MM_HINT_T1);
        pf.advance(64 * NT);
      }
      __m512 xb[T];
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t) xb[t] = _mm512_set1_ps(xs[t * w.in + i]);
      #pragma GCC unroll 16
      for (int a = 0; a < NT; ++a) {
        const __m512i v = _mm512_loadu_si512(qw + i * words + 16 * a);
        const __m512i v8 = k0 + S > 6 ? _mm512_srli_epi32(v, 8) : v;
        #pragma GCC unroll 16
        for (int j = 0; j < S; ++j) {
          const int k = k0 + j;
          const __m512i bits = _mm512_and_si512(k < 6 ? v : v8, _mm512_set1_epi32(int32_t(0xFu << kSlotShift[k])));
          const __m512 q = DENORMAL ? _mm512_castsi512_ps(bits) : _mm512_cvtepi32_ps(bits);
          #pragma GCC unroll 16
          for (int t = 0; t < T; ++t) pa[t][a][j] = _mm512_fmadd_ps(q, xb[t], pa[t][a][j]);
        }
      }
    }
    if (!last) {
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
        #pragma GCC unroll 16
        for (int a = 0; a < NT; ++a)
          #pragma GCC unroll 16
          for (int j = 0; j < S; ++j)
            _mm512_storeu_ps(part + t * full + (tile + a) * kW4TileCols + 16 * (k0 + j), pa[t][a][j]);
      continue;
    }
    // Group epilogue: acc += s · (unscale · part − z · Σx), z from the packed qzeros word (same slots).
    #pragma GCC unroll 16
    for (int a = 0; a < NT; ++a) {
      const __m512i zv = _mm512_loadu_si512(w.qzeros + g * words + (tile + a) * 16);
      const float* s = w.scales_tiled + g * w.out + (tile + a) * kW4TileCols;
      #pragma GCC unroll 16
      for (int j = 0; j < S; ++j) {
        const int k = k0 + j;
        const __m512 zk = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(zv, 4 * k), _mm512_set1_epi32(0xF)));
        const __m512 sk = _mm512_loadu_ps(s + 16 * k), uk = _mm512_set1_ps(unscale[k]);
        #pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          float* ac = acc + t * full + (tile + a) * kW4TileCols + 16 * k;
          const __m512 pk = _mm512_mul_ps(pa[t][a][j], uk);
          _mm512_storeu_ps(ac, _mm512_fmadd_ps(sk, _mm512_fnmadd_ps(zk, _mm512_set1_ps(sx[t]), pk), _mm512_loadu_ps(ac)));
        }
      }
    }
  }
}

// The same for AVX2 (16 ymm registers): one half tile (8 words, 64 columns) at a time, T tokens × S slots of
// accumulators (≤ 8 registers), slots k0..k0+S in turn.
template <int T, int S, bool DENORMAL>
MIXQ_AVX2 static inline void gemv_panel_avx2(const W4A16Weights& w, const float* xs, const float* unscale, int64_t g,
                                             int64_t p0, int64_t p1, int64_t tile, int half, bool first, bool last,
                                             const float* sx, float* acc, float* part, int64_t full,
                                             PrefetchCursor& pf) {
  static_assert(T * S <= 8 && 8 % S == 0, "accumulators must fit in registers");
  const int64_t words = w.out / 8, col0 = tile * kW4TileCols + 8 * half;  // slot k of the half at col0 + 16k
  const int32_t* qw = w.qweight + tile * 16 + 8 * half;
  for (int k0 = 0; k0 < 8; k0 += S) {
    __m256 pa[T][S];
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t)
      #pragma GCC unroll 16
      for (int j = 0; j < S; ++j)
        pa[t][j] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(part + t * full + col0 + 16 * (k0 + j));
    for (int64_t i = p0; i < p1; ++i) {
      if (k0 == 0) {
        if ((pf.col & 63) == 0)
          if (const char* ahead = pf.at()) _mm_prefetch(ahead, _MM_HINT_T1);
        pf.advance(32);
      }
      __m256 xb[T];
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t) xb[t] = _mm256_set1_ps(xs[t * w.in + i]);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qw + i * words));
      const __m256i v8 = k0 + S > 6 ? _mm256_srli_epi32(v, 8) : v;
      #pragma GCC unroll 16
      for (int j = 0; j < S; ++j) {
        const int k = k0 + j;
        const __m256i bits = _mm256_and_si256(k < 6 ? v : v8, _mm256_set1_epi32(int32_t(0xFu << kSlotShift[k])));
        const __m256 q = DENORMAL ? _mm256_castsi256_ps(bits) : _mm256_cvtepi32_ps(bits);
        #pragma GCC unroll 16
        for (int t = 0; t < T; ++t) pa[t][j] = _mm256_fmadd_ps(q, xb[t], pa[t][j]);
      }
    }
    if (!last) {
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
        #pragma GCC unroll 16
        for (int j = 0; j < S; ++j) _mm256_storeu_ps(part + t * full + col0 + 16 * (k0 + j), pa[t][j]);
      continue;
    }
    const __m256i zv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qzeros + g * words + tile * 16 + 8 * half));
    const float* s = w.scales_tiled + g * w.out + col0;
    #pragma GCC unroll 16
    for (int j = 0; j < S; ++j) {
      const int k = k0 + j;
      const __m256 zk = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(zv, 4 * k), _mm256_set1_epi32(0xF)));
      const __m256 sk = _mm256_loadu_ps(s + 16 * k), uk = _mm256_set1_ps(unscale[k]);
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        float* ac = acc + t * full + col0 + 16 * k;
        const __m256 pk = _mm256_mul_ps(pa[t][j], uk);
        _mm256_storeu_ps(ac, _mm256_fmadd_ps(sk, _mm256_fnmadd_ps(zk, _mm256_set1_ps(sx[t]), pk), _mm256_loadu_ps(ac)));
      }
    }
  }
}

// GEMV over the groups [g0, g1) (a K-chunk: one contiguous run of whole rows) and every full tile, for n tokens
// (x: [n][in]). acc: [n][full] slot-order f32 accumulators (+=); part: [n][full] scratch for a group's partial
// sums; xs: [n][in] scratch for the scaled x.
// Walk: group → panel of kPanelRows rows → tile pair (AVX2: half tile) → row, so a panel's rows are read as a few
// short streams and the panel is done before the next starts. A software prefetch cursor runs sequentially ahead
// through the chunk into L2 (a panel plus 64 KiB ahead): on the 2-core Zen 4 VM, interleaved row streams read at
// 10–20 GB/s with the hardware prefetchers alone and at ≈ 24 GB/s with this cursor (one thread; sequential
// reading ≈ 26 GB/s). Every 64-byte line gets its own prefetch: one per 128-byte strip row measured 8 GB/s against
// 13–16 (awq_bench gemv, 2 threads, load ≈ 4).
struct GemvChunk {  // shared set-up of a work item: DAZ cleared, x scaled, prefetch cursor placed
  DazOff daz_off;
  float unscale[8];
  PrefetchCursor pf;
  GemvChunk(const W4A16Weights& w, const float* x, int64_t n, int64_t g0, int64_t g1, int64_t tile_b, int64_t tile_e,
            bool denormal, float* xs)
      : pf(w, g0 * w.group, tile_b, tile_e) {
    scale_chunk(x, n, w.in, g0 * w.group, g1 * w.group, denormal, xs, unscale);
  }
};

// sum_x[t] = Σ x[t][i] over one group's rows i0..i1 (the zero-point term of every kernel).
template <int T>
static inline void group_sums(const float* x, int64_t in, int64_t i0, int64_t i1, float* sum_x) {
  for (int t = 0; t < T; ++t) {
    sum_x[t] = 0;
    for (int64_t i = i0; i < i1; ++i) sum_x[t] += x[t * in + i];
  }
}

template <int T, bool DENORMAL>
MIXQ_AVX512 static void gemv_groups_avx512_t(const W4A16Weights& w, const float* x, int64_t g0, int64_t g1,
                                             int64_t tile_b, int64_t tile_e, float* acc, float* part, float* xs) {
  // One token: two tiles a strip, all 8 slots (16 accumulators); 2 tokens: one tile, 8 slots; 3–4: 4 slots at a
  // time; 5–8: 2 slots at a time.
  constexpr int NT = T == 1 ? 2 : 1, S = T <= 2 ? 8 : T <= 4 ? 4 : 2;
  GemvChunk c(w, x, T, g0, g1, tile_b, tile_e, DENORMAL, xs);
  const int64_t full = w.out / kW4TileCols * kW4TileCols;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t i0 = g * w.group, i1 = i0 + w.group;
    float sum_x[T];
    group_sums<T>(x, w.in, i0, i1, sum_x);
    for (int64_t p0 = i0; p0 < i1; p0 += kPanelRows) {
      const int64_t p1 = std::min(p0 + kPanelRows, i1);
      int64_t tile = tile_b;
      for (; tile + NT <= tile_e; tile += NT)
        gemv_panel_avx512<T, NT, S, DENORMAL>(w, xs, c.unscale, g, p0, p1, tile, p0 == i0, p1 == i1, sum_x, acc, part,
                                              full, c.pf);
      if (tile < tile_e)
        gemv_panel_avx512<T, 1, S, DENORMAL>(w, xs, c.unscale, g, p0, p1, tile, p0 == i0, p1 == i1, sum_x, acc, part,
                                             full, c.pf);
    }
  }
}

template <bool DENORMAL>
MIXQ_AVX512 static void gemv_groups_avx512(const W4A16Weights& w, const float* x, int64_t n, int64_t g0, int64_t g1,
                                           int64_t tile_b, int64_t tile_e, float* acc, float* part, float* xs) {
  switch (n) {
    case 1: return gemv_groups_avx512_t<1, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 2: return gemv_groups_avx512_t<2, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 3: return gemv_groups_avx512_t<3, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 4: return gemv_groups_avx512_t<4, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 5: return gemv_groups_avx512_t<5, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 6: return gemv_groups_avx512_t<6, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 7: return gemv_groups_avx512_t<7, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    default: return gemv_groups_avx512_t<8, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
  }
}

template <int T, bool DENORMAL>
MIXQ_AVX2 static void gemv_groups_avx2_t(const W4A16Weights& w, const float* x, int64_t g0, int64_t g1, int64_t tile_b,
                                         int64_t tile_e, float* acc, float* part, float* xs) {
  // 1 token: all 8 slots at once; 2: 4 slots; 3–4: 2 slots.
  constexpr int S = T == 1 ? 8 : T == 2 ? 4 : 2;
  GemvChunk c(w, x, T, g0, g1, tile_b, tile_e, DENORMAL, xs);
  const int64_t full = w.out / kW4TileCols * kW4TileCols;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t i0 = g * w.group, i1 = i0 + w.group;
    float sum_x[T];
    group_sums<T>(x, w.in, i0, i1, sum_x);
    for (int64_t p0 = i0; p0 < i1; p0 += kPanelRows) {
      const int64_t p1 = std::min(p0 + kPanelRows, i1);
      for (int64_t tile = tile_b; tile < tile_e; ++tile)
        for (int half = 0; half < 2; ++half)
          gemv_panel_avx2<T, S, DENORMAL>(w, xs, c.unscale, g, p0, p1, tile, half, p0 == i0, p1 == i1, sum_x, acc,
                                          part, full, c.pf);
    }
  }
}

// n ≤ 4 (w4a16_forward splits 5–8 tokens into two passes: with 16 ymm registers, more tokens at once would spill).
template <bool DENORMAL>
MIXQ_AVX2 static void gemv_groups_avx2(const W4A16Weights& w, const float* x, int64_t n, int64_t g0, int64_t g1,
                                       int64_t tile_b, int64_t tile_e, float* acc, float* part, float* xs) {
  switch (n) {
    case 1: return gemv_groups_avx2_t<1, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 2: return gemv_groups_avx2_t<2, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    case 3: return gemv_groups_avx2_t<3, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
    default: return gemv_groups_avx2_t<4, DENORMAL>(w, x, g0, g1, tile_b, tile_e, acc, part, xs);
  }
}

// Best of 5 timings (ns) of 8 chains × 256 FMAs operand · 2^100 (a normal product either way).
MIXQ_AVX2 static double fma_chain_best_ns(float operand) {
  volatile float in_a = operand, in_b = 0x1p100f;
  const __m256 a = _mm256_set1_ps(in_a), b = _mm256_set1_ps(in_b);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    __m256 acc[8];
    for (auto& v : acc) v = _mm256_setzero_ps();
    const auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < 256; ++it)
      for (auto& v : acc) v = _mm256_fmadd_ps(a, b, v);
    __m256 sum = acc[0];
    for (int j = 1; j < 8; ++j) sum = _mm256_add_ps(sum, acc[j]);
    volatile float sink = _mm256_cvtss_f32(sum);
    (void)sink;
    best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

static bool measure_denormal_fma_fast() {
  DazOff daz_off;
  return fma_chain_best_ns(0x1p-140f) < 2.0 * fma_chain_best_ns(0x1p-100f) + 200.0;  // +200 ns: timer granularity
}

// ---- GEMM (more than 8 tokens): AVX-512 ------------------------------------------------------------------------

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

// ---- GEMM (more than 8 tokens): AVX2 -----------------------------------------------------------------------------

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
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
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

// K-chunks of the SIMD GEMV: the rows are split into this many runs of whole groups, fixed by the shape and
// never by the thread count, so every output is the same sum in the same order on any pool; each chunk is one
// contiguous region of the matrix, streamed by one thread. ~1024 rows a chunk, at most 8 (a few % of extra
// partial-output traffic at most).
static int64_t gemv_kchunks(const W4A16Weights& w) {
  return std::max<int64_t>(1, std::min<int64_t>({w.in / w.group, int64_t(8), w.in / 1024}));
}

#if defined(__x86_64__)
using GemvGroupsFn = void (*)(const W4A16Weights&, const float*, int64_t n, int64_t g0, int64_t g1, int64_t tile_b,
                              int64_t tile_e, float*, float*, float*);
constexpr int64_t kMaxGemvTokens = 8;  // n ≤ 8 tokens through the K-chunked GEMV, one pass over W

// y = x · Wᵀ for n ≤ kMaxGemvTokens tokens (x: [n][in], y: [n][out]). Work items = K-chunks (fixed by the shape:
// the sums and their order) × column blocks of whole tiles (only when there are fewer chunks than threads, i.e.
// small matrices; a column's sum never spans items, so this split cannot change results), plus one item for the
// tail columns (scalar). Chunk outputs are summed in chunk order.
static void gemv_kchunked(const W4A16Weights& w, const float* x, int64_t n, float* y, ThreadPool& pool,
                          GemvGroupsFn groups_fn) {
  const int64_t tiles = w.out / kW4TileCols, full = tiles * kW4TileCols, groups = w.in / w.group;
  const int64_t chunks = tiles > 0 ? gemv_kchunks(w) : 0;
  const int64_t threads = pool.size();
  const int64_t cblocks = chunks == 0 || chunks >= threads ? 1 : std::min(tiles, (threads + chunks - 1) / chunks);
  const int64_t items = chunks * cblocks + (full < w.out ? 1 : 0);
  thread_local std::vector<float> partial;  // [chunks][n][full] chunk outputs, natural order (chunks > 1)
  if (chunks > 1 && partial.size() < size_t(chunks * n * full)) partial.resize(size_t(chunks * n * full));
  float* const chunk_out = partial.data();  // this thread's buffer (a worker's `partial` would be its own)
  pool.parallel_for(items, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scratch;  // acc [n][full] + part [n][full] + xs [n][in], reused across calls
    const size_t need = size_t(n * (2 * full + w.in));
    if (scratch.size() < need) scratch.resize(need);
    for (int64_t item = b; item < e; ++item) {
      if (item == chunks * cblocks) {
        for (int64_t t = 0; t < n; ++t) gemv_cols_scalar(w, x + t * w.in, y + t * w.out, full, w.out);
        continue;
      }
      const int64_t chunk = item / cblocks, cb = item % cblocks;
      const int64_t tile_b = tiles * cb / cblocks, tile_e = tiles * (cb + 1) / cblocks;
      float* acc = scratch.data();
      for (int64_t t = 0; t < n; ++t)
        std::fill(acc + t * full + tile_b * kW4TileCols, acc + t * full + tile_e * kW4TileCols, 0.0f);
      groups_fn(w, x, n, groups * chunk / chunks, groups * (chunk + 1) / chunks, tile_b, tile_e, acc, acc + n * full,
                acc + 2 * n * full);
      for (int64_t t = 0; t < n; ++t) {
        float* out = chunks > 1 ? chunk_out + (chunk * n + t) * full : y + t * w.out;
        for (int64_t tile = tile_b; tile < tile_e; ++tile)
          store_tile_natural(acc + t * full + tile * kW4TileCols, out + tile * kW4TileCols);
      }
    }
  });
  if (chunks > 1) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < full; ++o) {
        float sum = chunk_out[t * full + o];
        for (int64_t c = 1; c < chunks; ++c) sum += chunk_out[(c * n + t) * full + o];
        y[t * w.out + o] = sum;
      }
  }
}
#endif

void w4a16_forward(const W4A16Weights& w, const float* x, int64_t n, float* y, ThreadPool& pool, W4Isa isa,
                   W4Nibble nibble) {
  if (n <= 0) return;
  if (isa == W4Isa::Auto) isa = w4_best_isa();
  if (nibble == W4Nibble::Auto) nibble = w4_nibble_route();
  const int64_t full_tiles = w.out / kW4TileCols;
  const bool tail = w.out % kW4TileCols != 0;
  const int64_t col_items = full_tiles + (tail ? 1 : 0);
  auto cols_scalar = [&](const float* xt, float* yt, int64_t c0, int64_t c1) { gemv_cols_scalar(w, xt, yt, c0, c1); };
#if defined(__x86_64__)
  const bool dn = nibble == W4Nibble::Denormal;
  if (isa == W4Isa::Avx512 && n <= kMaxGemvTokens) {
    gemv_kchunked(w, x, n, y, pool, dn ? gemv_groups_avx512<true> : gemv_groups_avx512<false>);
    return;
  }
  if (isa == W4Isa::Avx2 && n <= kMaxGemvTokens) {
    // ≤ 4 tokens a pass (measured at 4096 × 14336: 1.9–2.1 ms per token for 2–4 tokens a pass, 2.9 for 8 in one
    // pass, 2.7 through the tiled GEMM).
    const GemvGroupsFn fn = dn ? gemv_groups_avx2<true> : gemv_groups_avx2<false>;
    const int64_t first = n <= 4 ? n : (n + 1) / 2;
    gemv_kchunked(w, x, first, y, pool, fn);
    if (first < n) gemv_kchunked(w, x + first * w.in, n - first, y + first * w.out, pool, fn);
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
