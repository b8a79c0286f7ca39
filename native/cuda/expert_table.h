// A layer's experts as a device-resident table, so kernels find an expert's int4 matrices from the routed ids
// on the device (no host synchronisation). Built by the CUDA backend from an ExpertSet (cached per set).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

namespace mixq::cuda {

// One AWQ GEMM-format matrix: qweight int32 [in, out/8], qzeros int32 [in/G, out/8], scales fp16 [in/G, out].
struct AwqMatrix {
  const int32_t* qweight = nullptr;
  const int32_t* qzeros = nullptr;
  const __half* scales = nullptr;
};

// Matrix indices in ExpertMatrices::w.
enum ExpertMatrix : int { kGate = 0, kUp = 1, kDown = 2 };  // w1 [inter←hidden], w3 [inter←hidden], w2 [hidden←inter]

// table[e] for e < num_experts; qweight == nullptr where this device does not hold expert e.
struct ExpertMatrices {
  AwqMatrix w[3];
};

}  // namespace mixq::cuda
