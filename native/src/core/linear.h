// A prepared weight handle for y = x · Wᵀ: made by a backend from checkpoint tensors (Backend::prepare_linear);
// the backend decides the resident layout (the CPU reads bf16/fp16/f32 or packed AWQ int4 in place from the
// mapping; a GPU uploads and may repack). Model code only passes handles to Backend::linear.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "device.h"
#include "model_config.h"
#include "tensor.h"

namespace mixq {

class Linear {
 public:
  virtual ~Linear() = default;
  // Row `o` of W as f32: dst [in]. Host-side; used by reference paths, tests and the quantizer.
  virtual void weight_row(int64_t o, float* dst) const = 0;
  virtual size_t weight_bytes() const = 0;  // bytes a forward streams from memory
  virtual std::string kind() const = 0;     // "bf16", "f16", "f32", "awq-int4-g128", ...
  int64_t in_features = 0;
  int64_t out_features = 0;
  std::string name;  // checkpoint prefix, e.g. "model.layers.0.self_attn.q_proj"
  Device device;     // where the handle's weights live
  std::shared_ptr<const void> residency;  // the backend's hold on the weights (its arena counts them)
};

// What a linear layer is made from: a dense `weight` [out, in] (bf16/fp16/f32) — or, when `transposed`, an f32
// weight stored [in, out] (the quantizer's layout, read at every call so in-place edits count) — or AWQ GEMM int4
// `qweight` [in, out/8] i32, `qzeros` [in/group, out/8] i32, `scales` [in/group, out] fp16.
struct LinearSource {
  std::string name;
  const TensorView* weight = nullptr;
  bool transposed = false;
  const TensorView* qweight = nullptr;
  const TensorView* qzeros = nullptr;
  const TensorView* scales = nullptr;
  QuantConfig quant;
};

}  // namespace mixq
