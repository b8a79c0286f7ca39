#include "attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "error.h"
#include "thread_pool.h"

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define MIXQ_X86 1
#endif

namespace mixq {

namespace {

// One (token, head) row: scores over the visible keys, softmax, weighted sum of values.
// scores: scratch of at least n_past + n floats.
inline void attend_one(const float* qv, int64_t pos, const float* k_cache, const float* v_cache, int64_t kv_stride,
                       int kvh, const AttentionShape& s, float scale, float* scores, float* o) {
  const int hd = s.head_dim;
  const int64_t lo = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
  float mx = -INFINITY;
  for (int64_t j = lo; j <= pos; ++j) {
    const float* kv = k_cache + j * kv_stride + int64_t(kvh) * hd;
    float dot = 0.f;
    for (int i = 0; i < hd; ++i) dot += qv[i] * kv[i];
    const float sc = dot * scale;
    scores[j - lo] = sc;
    mx = std::max(mx, sc);
  }
  float sum = 0.f;
  for (int64_t j = lo; j <= pos; ++j) {
    const float e = std::exp(scores[j - lo] - mx);
    scores[j - lo] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < hd; ++i) o[i] = 0.f;
  for (int64_t j = lo; j <= pos; ++j) {
    const float p = scores[j - lo] * inv;
    const float* vv = v_cache + j * kv_stride + int64_t(kvh) * hd;
    for (int i = 0; i < hd; ++i) o[i] += p * vv[i];
  }
}

#ifdef MIXQ_X86
// The same computation with the q·k dot products and the p·v accumulation in 16 / 8 lanes
// (head_dim a multiple of the width; the softmax stays scalar f32).
#define MIXQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define MIXQ_AVX2 __attribute__((target("avx2,fma")))

MIXQ_AVX512 void attend_one_avx512(const float* qv, int64_t pos, const float* k_cache, const float* v_cache,
                                   int64_t kv_stride, int kvh, const AttentionShape& s, float scale, float* scores,
                                   float* o) {
  const int hd = s.head_dim;
  const int64_t lo = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
  float mx = -INFINITY;
  for (int64_t j = lo; j <= pos; ++j) {
    const float* kv = k_cache + j * kv_stride + int64_t(kvh) * hd;
    __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qv), _mm512_loadu_ps(kv));
    for (int i = 16; i < hd; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qv + i), _mm512_loadu_ps(kv + i), acc);
    const float sc = _mm512_reduce_add_ps(acc) * scale;
    scores[j - lo] = sc;
    mx = std::max(mx, sc);
  }
  float sum = 0.f;
  for (int64_t j = lo; j <= pos; ++j) {
    const float e = std::exp(scores[j - lo] - mx);
    scores[j - lo] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  // One pass over the value rows (positions outer), the head's output held in ≤ 16 registers
  // (head_dim ≤ 256); wider heads take a pass per 256 columns.
  for (int i0 = 0; i0 < hd; i0 += 256) {
    const int blocks = std::min(hd - i0, 256) / 16;
    __m512 acc[16];
    for (int b = 0; b < blocks; ++b) acc[b] = _mm512_setzero_ps();
    for (int64_t j = lo; j <= pos; ++j) {
      const float* vv = v_cache + j * kv_stride + int64_t(kvh) * hd + i0;
      const __m512 p = _mm512_set1_ps(scores[j - lo] * inv);
      for (int b = 0; b < blocks; ++b) acc[b] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vv + 16 * b), acc[b]);
    }
    for (int b = 0; b < blocks; ++b) _mm512_storeu_ps(o + i0 + 16 * b, acc[b]);
  }
}

MIXQ_AVX2 float hsum8_attn(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

MIXQ_AVX2 void attend_one_avx2(const float* qv, int64_t pos, const float* k_cache, const float* v_cache,
                               int64_t kv_stride, int kvh, const AttentionShape& s, float scale, float* scores,
                               float* o) {
  const int hd = s.head_dim;
  const int64_t lo = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
  float mx = -INFINITY;
  for (int64_t j = lo; j <= pos; ++j) {
    const float* kv = k_cache + j * kv_stride + int64_t(kvh) * hd;
    __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(qv), _mm256_loadu_ps(kv));
    for (int i = 8; i < hd; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qv + i), _mm256_loadu_ps(kv + i), acc);
    const float sc = hsum8_attn(acc) * scale;
    scores[j - lo] = sc;
    mx = std::max(mx, sc);
  }
  float sum = 0.f;
  for (int64_t j = lo; j <= pos; ++j) {
    const float e = std::exp(scores[j - lo] - mx);
    scores[j - lo] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (int i0 = 0; i0 < hd; i0 += 128) {  // ≤ 16 ymm accumulators per pass over the value rows
    const int blocks = std::min(hd - i0, 128) / 8;
    __m256 acc[16];
    for (int b = 0; b < blocks; ++b) acc[b] = _mm256_setzero_ps();
    for (int64_t j = lo; j <= pos; ++j) {
      const float* vv = v_cache + j * kv_stride + int64_t(kvh) * hd + i0;
      const __m256 p = _mm256_set1_ps(scores[j - lo] * inv);
      for (int b = 0; b < blocks; ++b) acc[b] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vv + 8 * b), acc[b]);
    }
    for (int b = 0; b < blocks; ++b) _mm256_storeu_ps(o + i0 + 8 * b, acc[b]);
  }
}
#endif

using AttendFn = void (*)(const float*, int64_t, const float*, const float*, int64_t, int, const AttentionShape&, float,
                          float*, float*);

AttendFn pick_attend(DenseIsa isa, int head_dim) {
  if (!dense_isa_supported(isa)) throw Error(std::string("attention: ") + dense_isa_name(isa) + " not supported by this CPU");
#ifdef MIXQ_X86
  if (isa == DenseIsa::Avx512 && head_dim % 16 == 0) return &attend_one_avx512;
  if (isa != DenseIsa::Scalar && head_dim % 8 == 0) return &attend_one_avx2;
#endif
  return &attend_one;
}

}  // namespace

void attention(const float* q, int64_t n, int64_t n_past, const float* k_cache, const float* v_cache,
               const AttentionShape& s, float* out, ThreadPool& pool) {
  static const DenseIsa best = best_dense_isa();
  attention_isa(best, q, n, n_past, k_cache, v_cache, s, out, pool);
}

void attention_isa(DenseIsa isa, const float* q, int64_t n, int64_t n_past, const float* k_cache,
                   const float* v_cache, const AttentionShape& s, float* out, ThreadPool& pool) {
  const int64_t q_stride = int64_t(s.heads) * s.head_dim, kv_stride = int64_t(s.kv_heads) * s.head_dim;
  const int group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  const AttendFn attend = pick_attend(isa, s.head_dim);
  // Causal rows get longer with t: deal (token, head) rows out round-robin so each thread gets an
  // even share of short and long rows.
  const int64_t rows = n * s.heads;
  const int64_t parts = std::min<int64_t>(pool.size(), rows);
  pool.parallel_for(parts, [&](int64_t b, int64_t e) {
    std::vector<float> scores(static_cast<size_t>(n_past + n));
    for (int64_t part = b; part < e; ++part) {
      for (int64_t r = part; r < rows; r += parts) {
        const int64_t t = r / s.heads;
        const int h = int(r % s.heads);
        attend(q + t * q_stride + int64_t(h) * s.head_dim, n_past + t, k_cache, v_cache, kv_stride, h / group, s,
               scale, scores.data(), out + t * q_stride + int64_t(h) * s.head_dim);
      }
    }
  });
}


}  // namespace mixq
