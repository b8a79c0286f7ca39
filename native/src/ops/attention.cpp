// The attention oracle: brute force over all keys with an explicit mask, in double.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mixq {

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
