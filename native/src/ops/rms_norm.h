// RMSNorm as transformers' MixtralRMSNorm computes it in float32:
//   y = w * (x * 1/sqrt(mean(x²) + eps))
#pragma once
#include <cstdint>

namespace mixq {

// x: [n, d] f32, w: [d] f32, y: [n, d] f32 (may alias x).
void rms_norm(const float* x, const float* w, int64_t n, int64_t d, float eps, float* y);

}  // namespace mixq
