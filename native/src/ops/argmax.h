// Greedy choice: ids[r] = the index of the largest value of row r of x [rows, n] f32; the lowest index on ties
// (torch.argmax's choice); NaN never wins (a row of NaN only gives 0).
#pragma once
#include <cstdint>

namespace mixq {

// The plain reference, also the CPU implementation.
void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* ids);
int32_t argmax(const float* x, int64_t n);  // one row

}  // namespace mixq
