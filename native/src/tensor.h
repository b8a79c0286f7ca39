// A read-only view of a tensor in a memory-mapped checkpoint (never a copy).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mixq {

enum class DType { F32, F16, BF16, I32, I64, U8, I8, F64, BOOL };

const char* dtype_name(DType t);
size_t dtype_size(DType t);

struct TensorView {
  std::string name;            // e.g. "model.layers.0.self_attn.q_proj.weight"
  std::string file;            // the safetensors file it lives in (for error messages)
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // row-major, outermost first
  const void* data = nullptr;  // points into the mapping
  size_t nbytes = 0;

  int64_t numel() const;
  std::string shape_str() const;  // "[256, 512]"
};

// fp16 / bf16 <-> f32 scalar conversions (exact; round-to-nearest-even on the way down).
float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
uint16_t f32_to_f16(float f);

}  // namespace mixq
