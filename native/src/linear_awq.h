// AWQ int4 Linear (GEMM checkpoint layout; see docs FIELD-NOTES): qweight int32 [in, out/8],
// qzeros int32 [in/group, out/8], scales fp16 [in/group, out]. Owned by the AWQ work; the engine
// core only calls the factory (implemented in linear_awq.cpp over awq/w4a16_cpu.h).
#pragma once
#include <memory>
#include <string>

#include "linear.h"
#include "model_config.h"
#include "tensor.h"

namespace mixq {

std::unique_ptr<Linear> make_awq_linear(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
                                        const QuantConfig& quant);

// Throws mixq::Error naming `source` unless quant is AWQ, version "gemm" (any case), 4 bits, a valid group size.
void validate_awq_quant_config(const QuantConfig& quant, const std::string& source);

}  // namespace mixq
