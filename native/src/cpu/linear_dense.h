// Dense Linear (bf16 / fp16 / f32 weight [out, in], read in place) with kernels per instruction set.
// The scalar kernel is the reference; AVX2+FMA+F16C and AVX-512 kernels are chosen at run time.
#pragma once
#include <memory>

#include "cpu_linear.h"

namespace mixq {

enum class DenseIsa { Scalar, Avx2, Avx512 };
const char* dense_isa_name(DenseIsa isa);
bool dense_isa_supported(DenseIsa isa);  // whether this CPU can run it
DenseIsa best_dense_isa();               // widest supported on this CPU

// Same as make_dense_linear(w) but forcing a kernel (tests compare SIMD against scalar).
std::unique_ptr<CpuLinear> make_dense_linear(const TensorView& w, DenseIsa isa);

// Low-level entry: y[t, o] = sum_i x[t, i] * W[o, i] for o in [o_begin, o_end), t in [0, n).
// W: [out, in] of dtype `dt` (F32/F16/BF16) at `w`; x: [n, in] f32; y: [n, out] f32 (row stride `out`).
void dense_rows(DenseIsa isa, const void* w, DType dt, int64_t in, int64_t out, int64_t o_begin, int64_t o_end,
                const float* x, int64_t n, float* y);

}  // namespace mixq
