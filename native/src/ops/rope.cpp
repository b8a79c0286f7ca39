#include "rope.h"

#include <cmath>

namespace mixq {

std::vector<float> rope_inv_freq(double theta, int head_dim) {
  // transformers: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
  // — every step in float32: the exponent is an f32 division, base ** e an f32 pow, 1/x an f32 division.
  std::vector<float> inv(size_t(head_dim / 2));
  const float base = float(theta);
  for (int i = 0; i < head_dim / 2; ++i) {
    const float e = float(2 * i) / float(head_dim);
    const float p = float(std::pow(double(base), double(e)));  // correctly rounded f32 pow
    inv[size_t(i)] = 1.0f / p;
  }
  return inv;
}

void rope_cos_sin(const std::vector<float>& inv_freq, int64_t pos, float* cos_out, float* sin_out) {
  const float p = float(pos);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float angle = p * inv_freq[i];  // f32 product, as transformers' f32 matmul of [d/2,1]x[1,seq]
    cos_out[i] = float(std::cos(double(angle)));
    sin_out[i] = float(std::sin(double(angle)));
  }
}

void rope_apply(float* x, int heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    float* v = x + int64_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void rope_rows(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq) {
  const std::vector<float> inv(inv_freq, inv_freq + head_dim / 2);
  std::vector<float> cos_v(inv.size()), sin_v(inv.size());
  for (int64_t t = 0; t < n; ++t) {
    rope_cos_sin(inv, positions[t], cos_v.data(), sin_v.data());
    rope_apply(x + t * int64_t(heads) * head_dim, heads, head_dim, cos_v.data(), sin_v.data());
  }
}

}  // namespace mixq
