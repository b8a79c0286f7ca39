// RMSNorm on the GPU, as transformers' MixtralRMSNorm computes it:
//   r = 1 / sqrt(mean(x²) + eps)          (fp32)
//   y = weight · round_T(x · r)            (the normalised row is rounded to x's dtype T first, then
//                                           multiplied by the weight in fp32 and rounded to T)
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "tensor.h"  // mixq::DType

namespace mixq::cuda {

// x: [rows, hidden] `dtype`; weight: [hidden] `weight_dtype`; y: [rows, hidden] `dtype` (y may equal x).
// dtype and weight_dtype: F32, F16 or BF16. Runs on the GPU that holds x, weight and y (checked: all three on
// one device, a DeviceGuard is opened for it) on `stream` (0 = that device's default stream).
// Throws mixq::Error on a wrong device, an unsupported dtype or a bad shape.
void rms_norm(const void* x, const void* weight, void* y, int64_t rows, int64_t hidden, float eps, DType dtype,
              DType weight_dtype, cudaStream_t stream);

// The launcher (no checks, no guard): the current device must be the tensors' device.
void launch_rms_norm(const void* x, const void* weight, void* y, int64_t rows, int64_t hidden, float eps,
                     DType dtype, DType weight_dtype, cudaStream_t stream);

}  // namespace mixq::cuda
