// The CPU's linear layers: weights stay in their stored format in the mapping (bf16/fp16/f32, or packed AWQ
// int4) and kernels convert inside the dot product; nothing is expanded at load time.
#pragma once
#include <cstdint>
#include <memory>

#include "core/linear.h"
#include "core/tensor.h"

namespace mixq {

class ThreadPool;

class CpuLinear : public Linear {
 public:
  // x: [n, in] f32 row-major; y: [n, out] f32 (overwritten).
  virtual void forward(const float* x, int64_t n, float* y, ThreadPool& pool) const = 0;
};

// Dense weight W: [out, in] in bf16, fp16 or f32, read in place from the mapping.
std::unique_ptr<CpuLinear> make_dense_linear(const TensorView& w);

}  // namespace mixq
