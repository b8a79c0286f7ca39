// AWQ int4 Linear (GEMM checkpoint layout; see docs FIELD-NOTES): qweight int32 [in, out/8],
// qzeros int32 [in/group, out/8], scales fp16 [in/group, out]. Owned by the AWQ work; the engine
// core only calls the factory (implemented in linear_awq.cpp over awq/w4a16_cpu.h).
#pragma once
#include <memory>
#include <string>

#include "cpu_linear.h"
#include "model_config.h"
#include "tensor.h"

namespace mixq {

std::unique_ptr<CpuLinear> make_awq_linear(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
                                        const QuantConfig& quant);


}  // namespace mixq
