// Linear over an f32 weight stored transposed, w_t [in, out] (the quantizer's layout: it rescales and
// fake-quantizes input channels in place), through the CPU's blocked GEMM (sgemm.h).
#pragma once
#include <memory>

#include "cpu_linear.h"

namespace mixq {

std::unique_ptr<CpuLinear> make_transposed_f32_linear(const TensorView& w_t);

}  // namespace mixq
