// The AutoAWQ "GEMM" int4 packing (casper-hansen/AutoAWQ awq/utils/packing_utils.py, FIELD-NOTES.md).
//
// A quantized Linear (out × in) is stored transposed, [in, out], 8 nibbles per int32 along the output dimension:
//   qweight int32 [in, out/8], qzeros int32 [in/group, out/8], scales fp16 [in/group, out]
//   w[i][o] = (q[i][o] - z[i/group][o]) * s[i/group][o]
// Nibble slot k (bits 4k..4k+3) of word c holds output column 8c + kAwqOrder[k]; column 8c + j lives in slot
// kAwqReverseOrder[j]. qzeros use the same packing.
#pragma once
#include <cstdint>

namespace mixq::awq {

constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};         // slot -> column offset
constexpr int kAwqReverseOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column offset -> slot

// q: [rows, cols] values 0..15 (one per byte); packed: [rows, cols/8] int32. cols % 8 == 0.
void pack_int4(const uint8_t* q, int64_t rows, int64_t cols, int32_t* packed);
// Inverse of pack_int4.
void unpack_int4(const int32_t* packed, int64_t rows, int64_t cols, uint8_t* q);

// One value: column `col` of a packed row.
inline int unpack_int4_at(const int32_t* packed_row, int64_t col) {
  const uint32_t word = uint32_t(packed_row[col >> 3]);
  return int((word >> (4 * kAwqReverseOrder[col & 7])) & 0xF);
}

}  // namespace mixq::awq
