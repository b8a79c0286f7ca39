// Linear layer y = x · Wᵀ over a prepared weight handle (core/linear.h).
//   x: [n, in] f32, y: [n, out] f32; W dense [out, in] (bf16/fp16/f32) or AWQ int4 (any group size 32–128).
#pragma once
#include <cstdint>

namespace mixq {

class Linear;

// The oracle: W's rows through weight_row (dequantized exactly), dot products in double.
void linear_reference(const Linear& w, const float* x, int64_t n, float* y);

}  // namespace mixq
