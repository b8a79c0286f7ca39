// Dense y = x · Wᵀ with the weight kept in its checkpoint dtype; elements are widened to f32 in
// registers inside the dot product (no f32 copy of any matrix). Work is split over output rows.
//
// SIMD kernels: a register tile of R weight rows × T tokens (R=4, T=4 on AVX-512: 16 accumulators;
// R=2, T=4 on AVX2), each weight vector converted once and reused for T tokens; one row at a time
// for a single token (decode), where streaming order matters more than register reuse.
#include "linear_dense.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu_features.h"
#include "error.h"
#include "thread_pool.h"

#if defined(__x86_64__)
// GCC 12 reports its own _mm512_undefined_* helpers as uninitialised inside target("avx512f") code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define MIXQ_X86 1
#endif

namespace mixq {

const char* dense_isa_name(DenseIsa isa) {
  switch (isa) {
    case DenseIsa::Scalar: return "scalar";
    case DenseIsa::Avx2: return "avx2";
    case DenseIsa::Avx512: return "avx512";
  }
  return "?";
}

bool dense_isa_supported(DenseIsa isa) {
  const CpuFeatures& f = cpu_caps();
  switch (isa) {
    case DenseIsa::Scalar: return true;
    case DenseIsa::Avx2: return f.avx2 && f.fma && f.f16c;
    case DenseIsa::Avx512: return f.avx512f && f.avx512bw && f.avx512vl;
  }
  return false;
}

DenseIsa best_dense_isa() {
  // MIXQ_CPU_ISA=scalar|avx2 caps the level (to run the AVX2 or the plain path on an AVX-512 machine,
  // as tests do); it never raises it above what the CPU supports.
  static const DenseIsa chosen = [] {
    DenseIsa best = DenseIsa::Scalar;
    if (dense_isa_supported(DenseIsa::Avx512)) best = DenseIsa::Avx512;
    else if (dense_isa_supported(DenseIsa::Avx2)) best = DenseIsa::Avx2;
    const char* cap = std::getenv("MIXQ_CPU_ISA");
    if (cap && std::strcmp(cap, "scalar") == 0) return DenseIsa::Scalar;
    if (cap && std::strcmp(cap, "avx2") == 0 && best == DenseIsa::Avx512) return DenseIsa::Avx2;
    return best;
  }();
  return chosen;
}

namespace {

// ---- scalar reference ------------------------------------------------------------------------
inline float load_scalar(const void* w, DType dt, int64_t i) {
  switch (dt) {
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
    default: return static_cast<const float*>(w)[i];
  }
}

void rows_scalar(const void* w, DType dt, int64_t in, int64_t out, int64_t o0, int64_t o1, const float* x,
                 int64_t n, float* y) {
  const size_t es = dtype_size(dt);
  for (int64_t o = o0; o < o1; ++o) {
    const void* row = static_cast<const char*>(w) + size_t(o) * size_t(in) * es;
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * in;
      float acc = 0.f;
      for (int64_t i = 0; i < in; ++i) acc += load_scalar(row, dt, i) * xt[i];
      y[t * out + o] = acc;
    }
  }
}

#ifdef MIXQ_X86
// ---- AVX2 + FMA + F16C: 8 lanes ----------------------------------------------------------------
#define MIXQ_AVX2 __attribute__((target("avx2,fma,f16c")))

template <DType DT>
MIXQ_AVX2 inline __m256 load8(const void* w, int64_t i) {
  if constexpr (DT == DType::BF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else if constexpr (DT == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i)));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  }
}

MIXQ_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R rows × T tokens tile.
template <DType DT, int R, int T>
MIXQ_AVX2 void tile_avx2(const void* const* rows, const float* const* xs, int64_t in, float* res /* [R][T] */) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  const int64_t main = in & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(xs[t] + i);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = load8<DT>(rows[r], i);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      float s = hsum8(acc[r][t]);
      for (int64_t i = main; i < in; ++i) s += load_scalar(rows[r], DT, i) * xs[t][i];
      res[r * T + t] = s;
    }
}
#endif  // MIXQ_X86

#ifdef MIXQ_X86
// ---- AVX-512 (F + BW + VL): 16 lanes, masked tail --------------------------------------------
#define MIXQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

template <DType DT>
MIXQ_AVX512 inline __m512 load16(const void* w, int64_t i, __mmask16 m) {
  if constexpr (DT == DType::BF16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else if constexpr (DT == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + i));
  } else {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + i);
  }
}

template <DType DT>
MIXQ_AVX512 inline __m512 load16(const void* w, int64_t i) {
  if constexpr (DT == DType::BF16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else if constexpr (DT == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i)));
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  }
}

// res[k] = horizontal sum of acc[k], k < N. Eight sums at a time share their shuffles
// (fold 512→256 bits, then a hadd tree), which matters when `in` is short (256 on the fixture).
template <int N>
MIXQ_AVX512 inline void reduce_tile_avx512(const __m512* acc, float* res) {
  __m256 h[N];
  for (int k = 0; k < N; ++k)
    h[k] = _mm256_add_ps(_mm512_castps512_ps256(acc[k]),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[k]), 1)));
  int k = 0;
  for (; k + 8 <= N; k += 8) {
    const __m256 s01 = _mm256_hadd_ps(h[k], h[k + 1]), s23 = _mm256_hadd_ps(h[k + 2], h[k + 3]);
    const __m256 s45 = _mm256_hadd_ps(h[k + 4], h[k + 5]), s67 = _mm256_hadd_ps(h[k + 6], h[k + 7]);
    const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
    // s0123 lanes: [a0 a1 a2 a3 | a0 a1 a2 a3] partial (low/high 128-bit halves), same for s4567.
    const __m256 lo = _mm256_permute2f128_ps(s0123, s4567, 0x20), hi = _mm256_permute2f128_ps(s0123, s4567, 0x31);
    _mm256_storeu_ps(res + k, _mm256_add_ps(lo, hi));
  }
  for (; k < N; ++k) {
    // The same pairing as the tree above, so a (row, token) result never depends on the tile it
    // fell in: batched, chunked and token-by-token evaluation agree bit for bit.
    const __m256 s = _mm256_hadd_ps(h[k], h[k]);
    const __m256 s2 = _mm256_hadd_ps(s, s);
    res[k] = _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(s2), _mm256_extractf128_ps(s2, 1)));
  }
}

template <DType DT, int R, int T>
MIXQ_AVX512 void tile_avx512(const void* const* rows, const float* const* xs, int64_t in, float* res) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t main = in & ~int64_t(15);
  for (int64_t i = 0; i < main; i += 16) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(xs[t] + i);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = load16<DT>(rows[r], i);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (main < in) {
    const __mmask16 m = __mmask16((1u << (in - main)) - 1);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, xs[t] + main);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = load16<DT>(rows[r], main, m);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  reduce_tile_avx512<R * T>(&acc[0][0], res);
}
#endif  // MIXQ_X86

// Walks the [o0,o1) × [0,n) output block in R×T tiles with smaller tiles at the edges.
using TileFn = void (*)(const void* const*, const float* const*, int64_t, float*);

template <int R, int T>
struct TileTable {
  TileFn fn[R + 1][T + 1] = {};
};

template <int RMAX, int TMAX>
void run_tiles(const TileTable<RMAX, TMAX>& tab, const void* w, size_t row_bytes, int64_t in, int64_t out,
               int64_t o0, int64_t o1, const float* x, int64_t n, float* y) {
  const void* rows[RMAX];
  const float* xs[TMAX];
  float res[RMAX * TMAX];
  // Decode (n = 1) is bandwidth-bound: walking one row at a time keeps a single sequential stream per
  // thread, which the hardware prefetcher follows far better than R interleaved row streams
  // (352 MB bf16 GEMV, 2 threads, EPYC VM: 24-27 GB/s vs 19.5 GB/s). Numerics are unchanged: every
  // (row, token) sum has the same order whatever the tile shape.
  const int rmax = n == 1 ? 1 : RMAX;
  for (int64_t o = o0; o < o1; o += rmax) {
    const int r = int(std::min<int64_t>(rmax, o1 - o));
    for (int k = 0; k < r; ++k) rows[k] = static_cast<const char*>(w) + size_t(o + k) * row_bytes;
    for (int64_t t = 0; t < n; t += TMAX) {
      const int tt = int(std::min<int64_t>(TMAX, n - t));
      for (int k = 0; k < tt; ++k) xs[k] = x + (t + k) * in;
      tab.fn[r][tt](rows, xs, in, res);
      for (int k = 0; k < r; ++k)
        for (int j = 0; j < tt; ++j) y[(t + j) * out + o + k] = res[k * tt + j];
    }
  }
}

#ifdef MIXQ_X86
template <DType DT, int R, int T>
void fill_avx2(TileTable<2, 4>& tab) {
  tab.fn[R][T] = &tile_avx2<DT, R, T>;
}
template <DType DT>
TileTable<2, 4> make_avx2_table() {
  TileTable<2, 4> t;
  fill_avx2<DT, 1, 1>(t); fill_avx2<DT, 1, 2>(t); fill_avx2<DT, 1, 3>(t); fill_avx2<DT, 1, 4>(t);
  fill_avx2<DT, 2, 1>(t); fill_avx2<DT, 2, 2>(t); fill_avx2<DT, 2, 3>(t); fill_avx2<DT, 2, 4>(t);
  return t;
}

template <DType DT, int R, int T>
void fill_avx512(TileTable<4, 4>& tab) {
  tab.fn[R][T] = &tile_avx512<DT, R, T>;
}
template <DType DT, int R>
void fill_avx512_row(TileTable<4, 4>& t) {
  fill_avx512<DT, R, 1>(t); fill_avx512<DT, R, 2>(t); fill_avx512<DT, R, 3>(t); fill_avx512<DT, R, 4>(t);
}
template <DType DT>
TileTable<4, 4> make_avx512_table() {
  TileTable<4, 4> t;
  fill_avx512_row<DT, 1>(t); fill_avx512_row<DT, 2>(t); fill_avx512_row<DT, 3>(t); fill_avx512_row<DT, 4>(t);
  return t;
}
#endif

}  // namespace

void dense_rows(DenseIsa isa, const void* w, DType dt, int64_t in, int64_t out, int64_t o0, int64_t o1,
                const float* x, int64_t n, float* y) {
  const size_t row_bytes = size_t(in) * dtype_size(dt);
#ifdef MIXQ_X86
  if (isa == DenseIsa::Avx512) {
    static const TileTable<4, 4> bf16 = make_avx512_table<DType::BF16>();
    static const TileTable<4, 4> f16 = make_avx512_table<DType::F16>();
    static const TileTable<4, 4> f32 = make_avx512_table<DType::F32>();
    const auto& tab = dt == DType::BF16 ? bf16 : dt == DType::F16 ? f16 : f32;
    run_tiles(tab, w, row_bytes, in, out, o0, o1, x, n, y);
    return;
  }
  if (isa == DenseIsa::Avx2) {
    static const TileTable<2, 4> bf16 = make_avx2_table<DType::BF16>();
    static const TileTable<2, 4> f16 = make_avx2_table<DType::F16>();
    static const TileTable<2, 4> f32 = make_avx2_table<DType::F32>();
    const auto& tab = dt == DType::BF16 ? bf16 : dt == DType::F16 ? f16 : f32;
    run_tiles(tab, w, row_bytes, in, out, o0, o1, x, n, y);
    return;
  }
#endif
  rows_scalar(w, dt, in, out, o0, o1, x, n, y);
}

namespace {

class DenseLinear final : public CpuLinear {
 public:
  DenseLinear(const TensorView& w, DenseIsa isa) : w_(w), isa_(isa) {
    if (w.shape.size() != 2) throw Error(w.file + ": tensor " + w.name + ": a Linear weight must be 2-D, got " + w.shape_str());
    if (w.dtype != DType::BF16 && w.dtype != DType::F16 && w.dtype != DType::F32) {
      throw Error(w.file + ": tensor " + w.name + ": unsupported weight dtype " + dtype_name(w.dtype) +
                  " (expected BF16, F16 or F32)");
    }
    if (!dense_isa_supported(isa)) throw Error(std::string("dense kernel ") + dense_isa_name(isa) + " is not supported by this CPU");
    out_features = w.shape[0];
    in_features = w.shape[1];
    name = w.name.size() > 7 && w.name.compare(w.name.size() - 7, 7, ".weight") == 0 ? w.name.substr(0, w.name.size() - 7)
                                                                                      : w.name;
  }

  void forward(const float* x, int64_t n, float* y, ThreadPool& pool) const override {
    // Split output rows into chunks of whole 16-row blocks so tiles stay full and per-thread
    // work is balanced; a single chunk for tiny matrices.
    const int64_t out = out_features, in = in_features;
    const int64_t block = 16;
    const int64_t blocks = (out + block - 1) / block;
    const int64_t work = out * in * std::max<int64_t>(n, 1);
    if (work < (int64_t(1) << 15) || pool.size() == 1) {
      dense_rows(isa_, w_.data, w_.dtype, in, out, 0, out, x, n, y);
      return;
    }
    pool.parallel_for(blocks, [&](int64_t b0, int64_t b1) {
      dense_rows(isa_, w_.data, w_.dtype, in, out, b0 * block, std::min(out, b1 * block), x, n, y);
    });
  }

  void weight_row(int64_t o, float* dst) const override {
    const size_t es = dtype_size(w_.dtype);
    const void* row = static_cast<const char*>(w_.data) + size_t(o) * size_t(in_features) * es;
    for (int64_t i = 0; i < in_features; ++i) dst[i] = load_scalar(row, w_.dtype, i);
  }

  size_t weight_bytes() const override { return w_.nbytes; }
  std::string kind() const override {
    return w_.dtype == DType::BF16 ? "bf16" : w_.dtype == DType::F16 ? "f16" : "f32";
  }

 private:
  TensorView w_;
  DenseIsa isa_;
};

}  // namespace

std::unique_ptr<CpuLinear> make_dense_linear(const TensorView& w, DenseIsa isa) {
  return std::make_unique<DenseLinear>(w, isa);
}

std::unique_ptr<CpuLinear> make_dense_linear(const TensorView& w) { return make_dense_linear(w, best_dense_isa()); }

}  // namespace mixq
