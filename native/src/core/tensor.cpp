// DType names/sizes and exact scalar conversions between f32 and the 16-bit float formats.
#include "tensor.h"

#include <cmath>
#include <cstring>

#include "error.h"

namespace mixq {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
    case DType::F64: return "F64";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I64: case DType::F64: return 8;
    case DType::U8: case DType::I8: case DType::BOOL: return 1;
  }
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}


namespace {
std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}
}  // namespace

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t Tensor::nbytes() const { return size_t(numel()) * dtype_size(dtype); }

std::string Tensor::shape_str() const { return shape_string(shape); }
std::string TensorView::shape_str() const { return shape_string(shape); }

Tensor Tensor::slice_rows(int64_t begin, int64_t count) const {
  if (shape.empty() || begin < 0 || count < 0 || begin + count > shape[0]) {
    throw Error("tensor " + name + " " + shape_str() + ": rows [" + std::to_string(begin) + ", " +
                std::to_string(begin + count) + ") out of range");
  }
  Tensor t = *this;
  t.shape[0] = count;
  t.offset += size_t(begin) * size_t(row_size()) * dtype_size(dtype);
  return t;
}

Tensor Tensor::reshaped(std::vector<int64_t> new_shape) const {
  Tensor t = *this;
  t.shape = std::move(new_shape);
  if (t.numel() != numel()) throw Error("tensor " + name + ": cannot view " + shape_str() + " as " + t.shape_str());
  return t;
}

float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { mant <<= 1; ++e; } while (!(mant & 0x400));
      mant &= 0x3ff;
      bits = sign | uint32_t(127 - 15 - e) << 23 | mant << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;  // inf / nan
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);  // quiet nan
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
  return uint16_t(bits >> 16);
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000);
  const uint32_t absb = bits & 0x7fffffffu;
  if (absb > 0x7f800000u) return sign | 0x7e00;              // nan
  if (absb >= 0x477ff000u) return sign | 0x7c00;             // rounds to >= 65520: inf
  if (absb < 0x38800000u) {                                  // below the smallest normal half (2^-14)
    if (absb < 0x33000000u) return sign;                     // < 2^-25: rounds to zero
    const uint32_t e = absb >> 23;
    const uint32_t mant = (absb & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;                          // value / 2^-24 = mant >> shift, shift 14..24
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1))) ++half;
    return sign | uint16_t(half);
  }
  uint32_t h = ((absb >> 13) - ((127 - 15) << 10));
  const uint32_t rem = absb & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return sign | uint16_t(h);
}

}  // namespace mixq
