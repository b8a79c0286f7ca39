// Embedding rows: x[t] = table[ids[t]] widened to f32.  table: [vocab, hidden] bf16/fp16/f32; ids: [n] i32.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mixq {

// The plain reference, also the CPU implementation. Throws mixq::Error naming the id and the vocab size when an
// id is out of range.
void embed_rows(const void* table, DType dtype, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n,
                float* x);

}  // namespace mixq
