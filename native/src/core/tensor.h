// Tensors: `TensorView`, a read-only view of a tensor in a memory-mapped checkpoint (never a copy), and
// `Tensor`, a typed, shaped region of a device `Buffer` — what the backends' ops take.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device.h"

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

// A block of memory of one device, freed by its owner's destructor. A CPU buffer may wrap mapped
// checkpoint memory (then `keep` holds the mapping alive and nothing is copied).
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() = 0;  // host address on a CPU device, device address on a GPU
  virtual size_t size() const = 0;
  virtual Device device() const = 0;
};

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;      // row-major, outermost first
  std::shared_ptr<Buffer> buffer;  // null for an empty tensor
  size_t offset = 0;               // bytes into buffer
  std::string name;                // for error messages ("x", "layer 3 k_cache", a checkpoint name)

  Device device() const { return buffer ? buffer->device() : Device{}; }
  int64_t numel() const;
  size_t nbytes() const;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t row_size() const { return shape.empty() ? 0 : numel() / shape[0]; }  // elements per row
  std::string shape_str() const;
  void* raw() const { return static_cast<char*>(buffer->data()) + offset; }
  template <class T>
  T* data() const { return static_cast<T*>(raw()); }
  // Rows [begin, begin + count) of dimension 0: a view into the same buffer.
  Tensor slice_rows(int64_t begin, int64_t count) const;
  // The same bytes under another shape (same element count).
  Tensor reshaped(std::vector<int64_t> new_shape) const;
};

// fp16 / bf16 <-> f32 scalar conversions (exact; round-to-nearest-even on the way down).
float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
uint16_t f32_to_f16(float f);

}  // namespace mixq
