#include "awq/awq_pack.h"

namespace mixq::awq {

void pack_int4(const uint8_t* q, int64_t rows, int64_t cols, int32_t* packed) {
  const int64_t words = cols / 8;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = q + r * cols;
    int32_t* dst = packed + r * words;
    for (int64_t c = 0; c < words; ++c) {
      uint32_t word = 0;
      for (int k = 0; k < 8; ++k) word |= uint32_t(src[8 * c + kAwqOrder[k]] & 0xF) << (4 * k);
      dst[c] = int32_t(word);
    }
  }
}

void unpack_int4(const int32_t* packed, int64_t rows, int64_t cols, uint8_t* q) {
  const int64_t words = cols / 8;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* src = packed + r * words;
    uint8_t* dst = q + r * cols;
    for (int64_t c = 0; c < words; ++c) {
      const uint32_t word = uint32_t(src[c]);
      for (int k = 0; k < 8; ++k) dst[8 * c + kAwqOrder[k]] = uint8_t((word >> (4 * k)) & 0xF);
    }
  }
}

}  // namespace mixq::awq
