#include "attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "thread_pool.h"

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

}  // namespace

void attention(const float* q, int64_t n, int64_t n_past, const float* k_cache, const float* v_cache,
               const AttentionShape& s, float* out, ThreadPool& pool) {
  const int64_t q_stride = int64_t(s.heads) * s.head_dim, kv_stride = int64_t(s.kv_heads) * s.head_dim;
  const int group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  pool.parallel_for(n * s.heads, [&](int64_t b, int64_t e) {
    std::vector<float> scores(size_t(n_past + n));
    for (int64_t r = b; r < e; ++r) {
      const int64_t t = r / s.heads;
      const int h = int(r % s.heads);
      attend_one(q + t * q_stride + int64_t(h) * s.head_dim, n_past + t, k_cache, v_cache, kv_stride, h / group, s,
                 scale, scores.data(), out + t * q_stride + int64_t(h) * s.head_dim);
    }
  });
}

void attention_reference(const float* q, int64_t n, int64_t n_past, const float* k_cache, const float* v_cache,
                         const AttentionShape& s, float* out) {
  // Brute force over all keys with an explicit mask, no shortcuts on the window bounds.
  const int64_t q_stride = int64_t(s.heads) * s.head_dim, kv_stride = int64_t(s.kv_heads) * s.head_dim;
  const int group = s.heads / s.kv_heads;
  const double scale = 1.0 / std::sqrt(double(s.head_dim));
  const int64_t total = n_past + n;
  std::vector<double> w(static_cast<size_t>(total));
  for (int64_t t = 0; t < n; ++t) {
    const int64_t p = n_past + t;
    for (int h = 0; h < s.heads; ++h) {
      const float* qv = q + t * q_stride + int64_t(h) * s.head_dim;
      double mx = -INFINITY;
      for (int64_t j = 0; j < total; ++j) {
        const bool visible = j <= p && (s.window <= 0 || j > p - s.window);
        if (!visible) { w[j] = -INFINITY; continue; }
        const float* kv = k_cache + j * kv_stride + int64_t(h / group) * s.head_dim;
        double dot = 0;
        for (int i = 0; i < s.head_dim; ++i) dot += double(qv[i]) * kv[i];
        w[j] = dot * scale;
        mx = std::max(mx, w[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < total; ++j) { w[j] = std::exp(w[j] - mx); sum += w[j]; }
      float* o = out + t * q_stride + int64_t(h) * s.head_dim;
      for (int i = 0; i < s.head_dim; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < total; ++j) acc += w[j] / sum * v_cache[j * kv_stride + int64_t(h / group) * s.head_dim + i];
        o[i] = float(acc);
      }
    }
  }
}

}  // namespace mixq
