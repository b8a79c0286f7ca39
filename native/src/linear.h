// A linear layer y = x · Wᵀ whose weight stays in its stored format (mmapped bf16/fp16/f32,
// or packed AWQ int4): kernels convert inside the dot product; nothing is expanded at load time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tensor.h"

namespace mixq {

class ThreadPool;

class Linear {
 public:
  virtual ~Linear() = default;
  // x: [n, in] f32 row-major; y: [n, out] f32 (overwritten).
  virtual void forward(const float* x, int64_t n, float* y, ThreadPool& pool) const = 0;
  // Row `o` of W as f32: dst [in]. Used by reference paths, tests and the quantizer.
  virtual void weight_row(int64_t o, float* dst) const = 0;
  virtual size_t weight_bytes() const = 0;  // bytes a forward streams from memory
  virtual std::string kind() const = 0;     // "bf16", "f16", "f32", "awq-int4-g128", ...
  int64_t in_features = 0;
  int64_t out_features = 0;
  std::string name;                          // checkpoint prefix, e.g. "model.layers.0.self_attn.q_proj"
};

// Dense weight W: [out, in] in bf16, fp16 or f32, read in place from the mapping.
std::unique_ptr<Linear> make_dense_linear(const TensorView& w);

}  // namespace mixq
