// W4A16 GEMV on the GPU for AutoAWQ "GEMM"-format weights (batch 1 decode):  y = x · W, W dequantized on the fly.
//
//   x        fp16  [1, in]
//   qweight  int32 [in, out/8]      8 nibbles per word along out; nibble slot i of word c = column 8c+ORDER[i],
//                                   ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
//   qzeros   int32 [in/G, out/8]    packed like qweight
//   scales   fp16  [in/G, out]
//   y        fp16 or f32 [1, out]   y[o] = Σ_i x[i] · (q[i][o] − z[i/G][o]) · s[i/G][o]
// G (group size) ∈ {32, 64, 128}; in % G == 0; out % 32 == 0; every pointer 16-byte aligned.
// The packed int4 matrix is read once, directly (16-byte loads); nothing is dequantized to memory.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "tensor.h"  // mixq::DType

namespace mixq::cuda {

// How the work is cut. cols_per_block (C) uint4 columns of 32 outputs per block, 256/C row-runs of
// rows_per_run (R) rows in parallel inside a block, split_k blocks along `in` for each column tile (their
// partial sums are reduced in a fixed order by the last block to finish: the result is deterministic).
struct GemvW4A16Config {
  int cols_per_block = 4;  // C ∈ {2, 4, 8}
  int rows_per_run = 16;   // R ∈ {16, 32}, R ≤ G
  int split_k = 1;         // ≥ 1; capped so that every block gets rows
  int flavor = 0;          // kernel variant (gemv_w4a16.cu): 0 plain loads, 1 L2-prefetch-hinted loads,
                           // 2 hinted loads with a run's rows all in flight first (R = 16 only),
                           // 3 cp.async pipeline through shared memory
};

// The configuration the entry uses for this shape on `device` (one wave of resident blocks).
GemvW4A16Config gemv_w4a16_default_config(int64_t in_features, int64_t out_features, int group_size, int device);

// Workspace the entry needs for `out_features` (any config): split-K partial sums and per-tile counters.
// Allocate once per device/stream, zero it once (cudaMemset) before first use; the kernel leaves its counters
// at zero again, so it can be reused by every later call on the same stream.
size_t gemv_w4a16_workspace_bytes(int64_t out_features);

// Guarded entry: checks shapes, alignment and that every tensor and the workspace live on one GPU, opens a
// DeviceGuard for it and launches on `stream`. `config` null → gemv_w4a16_default_config.
// Throws mixq::Error naming the problem.
void gemv_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, void* y,
                DType y_dtype, int64_t in_features, int64_t out_features, int group_size, void* workspace,
                size_t workspace_bytes, cudaStream_t stream, const GemvW4A16Config* config = nullptr);

// The launcher (no checks, no guard): the current device must be the tensors' device.
void launch_gemv_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, void* y,
                       DType y_dtype, int64_t in_features, int64_t out_features, int group_size, void* workspace,
                       const GemvW4A16Config& config, cudaStream_t stream);

}  // namespace mixq::cuda
