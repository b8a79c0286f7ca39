#include "sgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu_features.h"
#include "thread_pool.h"

namespace mixq {
namespace {

constexpr int64_t kBlockK = 256;   // K panel: 256 × 64 f32 of B = 64 KiB, stays in L2
constexpr int64_t kBlockCols = 64; // 4 AVX-512 vectors

void sgemm_plain(const float* X, int64_t ldx, const float* B, int64_t ldb, float* Y, int64_t ldy, int64_t n,
                 int64_t in, int64_t out, bool accumulate) {
  for (int64_t t = 0; t < n; ++t) {
    float* y = Y + t * ldy;
    if (!accumulate) std::fill(y, y + out, 0.0f);
    for (int64_t i = 0; i < in; ++i) {
      const float xi = X[t * ldx + i];
      const float* b = B + i * ldb;
      for (int64_t o = 0; o < out; ++o) y[o] += xi * b[o];
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx512f,fma"))) void sgemm_avx512(const float* X, int64_t ldx, const float* B, int64_t ldb,
                                                          float* Y, int64_t ldy, int64_t n, int64_t in, int64_t out,
                                                          bool accumulate) {
  for (int64_t k0 = 0; k0 < in; k0 += kBlockK) {
    const int64_t kn = std::min(kBlockK, in - k0);
    const bool load_y = accumulate || k0 > 0;
    for (int64_t c0 = 0; c0 < out; c0 += kBlockCols) {
      const int64_t cn = std::min(kBlockCols, out - c0);
      __mmask16 m[4];
      for (int j = 0; j < 4; ++j) {
        const int64_t left = std::clamp<int64_t>(cn - 16 * j, 0, 16);
        m[j] = __mmask16((1u << left) - 1u);
      }
      int64_t t = 0;
      for (; t + 4 <= n; t += 4) {
        __m512 acc[4][4];
        for (int a = 0; a < 4; ++a)
          for (int j = 0; j < 4; ++j)
            acc[a][j] = load_y ? _mm512_maskz_loadu_ps(m[j], Y + (t + a) * ldy + c0 + 16 * j) : _mm512_setzero_ps();
        const float* x0 = X + t * ldx + k0;
        for (int64_t k = 0; k < kn; ++k) {
          const float* b = B + (k0 + k) * ldb + c0;
          const __m512 b0 = _mm512_maskz_loadu_ps(m[0], b), b1 = _mm512_maskz_loadu_ps(m[1], b + 16),
                       b2 = _mm512_maskz_loadu_ps(m[2], b + 32), b3 = _mm512_maskz_loadu_ps(m[3], b + 48);
          for (int a = 0; a < 4; ++a) {
            const __m512 xb = _mm512_set1_ps(x0[a * ldx + k]);
            acc[a][0] = _mm512_fmadd_ps(xb, b0, acc[a][0]);
            acc[a][1] = _mm512_fmadd_ps(xb, b1, acc[a][1]);
            acc[a][2] = _mm512_fmadd_ps(xb, b2, acc[a][2]);
            acc[a][3] = _mm512_fmadd_ps(xb, b3, acc[a][3]);
          }
        }
        for (int a = 0; a < 4; ++a)
          for (int j = 0; j < 4; ++j) _mm512_mask_storeu_ps(Y + (t + a) * ldy + c0 + 16 * j, m[j], acc[a][j]);
      }
      for (; t < n; ++t) {
        __m512 acc[4];
        for (int j = 0; j < 4; ++j)
          acc[j] = load_y ? _mm512_maskz_loadu_ps(m[j], Y + t * ldy + c0 + 16 * j) : _mm512_setzero_ps();
        for (int64_t k = 0; k < kn; ++k) {
          const __m512 xb = _mm512_set1_ps(X[t * ldx + k0 + k]);
          const float* b = B + (k0 + k) * ldb + c0;
          for (int j = 0; j < 4; ++j) acc[j] = _mm512_fmadd_ps(xb, _mm512_maskz_loadu_ps(m[j], b + 16 * j), acc[j]);
        }
        for (int j = 0; j < 4; ++j) _mm512_mask_storeu_ps(Y + t * ldy + c0 + 16 * j, m[j], acc[j]);
      }
    }
  }
}
#endif

bool use_avx512() {
  static const bool yes = cpu_caps().avx512f && cpu_caps().fma;
  return yes;
}

}  // namespace

void sgemm_st(const float* X, int64_t ldx, const float* B, int64_t ldb, float* Y, int64_t ldy, int64_t n,
              int64_t in, int64_t out, bool accumulate) {
  if (n <= 0 || out <= 0) return;
  if (in <= 0) {
    if (!accumulate)
      for (int64_t t = 0; t < n; ++t) std::fill(Y + t * ldy, Y + t * ldy + out, 0.0f);
    return;
  }
#if defined(__x86_64__)
  if (use_avx512()) return sgemm_avx512(X, ldx, B, ldb, Y, ldy, n, in, out, accumulate);
#endif
  sgemm_plain(X, ldx, B, ldb, Y, ldy, n, in, out, accumulate);
}

void sgemm(const float* X, int64_t ldx, const float* B, int64_t ldb, float* Y, int64_t ldy, int64_t n, int64_t in,
           int64_t out, bool accumulate, ThreadPool& pool) {
  if (n <= 0 || out <= 0) return;
  // Column blocks of 256 (B panel shared by a block's rows) × row blocks of ≥ 64.
  const int64_t col_block = 256;
  const int64_t col_blocks = (out + col_block - 1) / col_block;
  const int64_t want = 4 * int64_t(pool.size());
  int64_t row_blocks = std::max<int64_t>(1, (want + col_blocks - 1) / col_blocks);
  int64_t rows = std::max<int64_t>(64, (n + row_blocks - 1) / row_blocks);
  row_blocks = (n + rows - 1) / rows;
  pool.parallel_for(row_blocks * col_blocks, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t rb = item / col_blocks, cb = item % col_blocks;
      const int64_t t0 = rb * rows, t1 = std::min(n, t0 + rows);
      const int64_t c0 = cb * col_block, c1 = std::min(out, c0 + col_block);
      sgemm_st(X + t0 * ldx, ldx, B + c0, ldb, Y + t0 * ldy + c0, ldy, t1 - t0, in, c1 - c0, accumulate);
    }
  });
}

}  // namespace mixq
