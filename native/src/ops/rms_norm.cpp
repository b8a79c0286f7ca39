#include "rms_norm.h"

#include <cmath>

namespace mixq {

void rms_norm(const float* x, const float* w, int64_t n, int64_t d, float eps, float* y) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * d;
    float* yt = y + t * d;
    // Sum of squares in double: the mean is then correctly rounded to f32, as close to torch's
    // pairwise f32 reduction as any fixed order gets.
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(xt[i]) * double(xt[i]);
    const float mean = float(ss / double(d));
    const float inv = 1.0f / std::sqrt(mean + eps);  // torch.rsqrt in f32
    for (int64_t i = 0; i < d; ++i) yt[i] = w[i] * (xt[i] * inv);
  }
}

}  // namespace mixq
