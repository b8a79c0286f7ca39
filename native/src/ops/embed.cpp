#include "embed.h"

#include <string>

#include "core/error.h"

namespace mixq {

void embed_rows(const void* table, DType dtype, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n,
                float* x) {
  for (int64_t t = 0; t < n; ++t) {
    const int32_t token = ids[t];
    if (token < 0 || token >= vocab) {
      throw Error("token id " + std::to_string(token) + " is out of range (vocab size " + std::to_string(vocab) + ")");
    }
    const size_t off = size_t(token) * size_t(hidden);
    float* dst = x + t * hidden;
    switch (dtype) {
      case DType::BF16: {
        const auto* p = static_cast<const uint16_t*>(table) + off;
        for (int64_t i = 0; i < hidden; ++i) dst[i] = bf16_to_f32(p[i]);
        break;
      }
      case DType::F16: {
        const auto* p = static_cast<const uint16_t*>(table) + off;
        for (int64_t i = 0; i < hidden; ++i) dst[i] = f16_to_f32(p[i]);
        break;
      }
      case DType::F32: {
        const float* p = static_cast<const float*>(table) + off;
        for (int64_t i = 0; i < hidden; ++i) dst[i] = p[i];
        break;
      }
      default: throw Error(std::string("embedding table has unsupported dtype ") + dtype_name(dtype));
    }
  }
}

}  // namespace mixq
