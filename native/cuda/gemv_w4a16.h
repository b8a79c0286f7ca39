// W4A16 GEMV on the GPU for AutoAWQ "GEMM"-format weights (batch-1 decode):  y = x · W, W dequantized on the fly.
//
//   x        fp16  [1, in]
//   qweight  int32 [in, out/8]      8 nibbles per word along out; nibble slot i of word c = column 8c+ORDER[i],
//                                   ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
//   qzeros   int32 [in/G, out/8]    packed like qweight
//   scales   fp16  [in/G, out]
//   y        fp16 or f32 [1, out]   y[o] = Σ_i x[i] · (q[i][o] − z[i/G][o]) · s[i/G][o]
// G (group size) ∈ {32, 64, 128}; in % G == 0; out % 32 == 0; every pointer 16-byte aligned.
// The packed int4 matrix is read once, directly (16-byte loads); nothing is dequantized to memory.
//
// Batched form: up to kGemvMaxBatch independent problems of one shape in one launch (e.g. the w1 and w3 of
// a token's top-2 experts: 4 matrices), which pays the launch and pipeline-fill cost once.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "expert_table.h"
#include "tensor.h"  // mixq::DType

namespace mixq::cuda {

constexpr int kGemvMaxBatch = 8;

// One matrix-vector product; all pointers device memory of one GPU.
struct GemvW4A16Problem {
  const __half* x = nullptr;          // [in]
  const int32_t* qweight = nullptr;   // [in, out/8]
  const int32_t* qzeros = nullptr;    // [in/G, out/8]
  const __half* scales = nullptr;     // [in/G, out]
  void* y = nullptr;                  // [out] fp16 or f32
};

// Routed form (MoE decode): problem z = m · slots + s multiplies matrix first_matrix + m of the expert
// expert_of[s] — read on the device from the router's output, never from the host — by x row s / x_row_div,
// into y + z·out, scaled by y_scale[s] when given. A slot whose id is outside [0, num_experts) or whose
// expert this device does not hold (null qweight) is skipped: its y is left as it is.
constexpr int kGemvMaxRoutedProblems = 64;
struct GemvW4A16Routes {
  const int32_t* expert_of = nullptr;     // [slots] device
  const ExpertMatrices* table = nullptr;  // [num_experts] device
  int num_experts = 0;
  int first_matrix = 0;                   // kGate (w1, w3 as matrices 0, 1) or kDown
  int slots = 0;
  int x_row_div = 1;                      // x row of slot s (top_k: rows are tokens; 1: rows are slots)
  const void* x = nullptr;                // [rows, in] f16, or f32 when x_f32 (rounded to f16 in registers)
  bool x_f32 = false;
  void* y = nullptr;                      // [matrices · slots, out]
  const float* y_scale = nullptr;         // [slots] or null
};

// How the work is cut. cols_per_block (C) columns of 8·W outputs per block, 256/C row-runs of
// rows_per_run (R) rows in parallel inside a block, split_k blocks along `in` for each column tile (their
// partial sums are reduced in a fixed order by the last block to finish: the result is deterministic).
struct GemvW4A16Config {
  int cols_per_block = 4;  // C ∈ {2, 4, 8}
  int rows_per_run = 16;   // R ∈ {16, 32}, R ≤ G
  int split_k = 1;         // ≥ 1; capped at 64 and so that every split gets rows
  int words_per_thread = 4;  // W ∈ {2, 4}: packed words (8 outputs each) a thread owns per row
};

// The configuration the entry uses for `batch` problems of this shape on `device` (a heuristic fitted to the
// sweep of native/bench/cuda_bench.cu on an H100; see docs/BENCHMARKS.md).
GemvW4A16Config gemv_w4a16_default_config(int64_t in_features, int64_t out_features, int group_size, int device,
                                          int batch = 1);

// Workspace the entry needs for `batch` problems with `out_features` (any config): split-K partial sums and
// per-tile counters. Allocate once per device/stream and zero it once (cudaMemset) before first use; every
// call leaves the counters at zero again, so it can be reused by every later call on the same stream.
size_t gemv_w4a16_workspace_bytes(int64_t out_features, int batch = 1);

// Guarded entries: check shapes, alignment and that every tensor and the workspace live on one GPU, open a
// DeviceGuard for it and launch on `stream`. `config` null → gemv_w4a16_default_config.
// Throws mixq::Error naming the problem.
void gemv_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, void* y,
                DType y_dtype, int64_t in_features, int64_t out_features, int group_size, void* workspace,
                size_t workspace_bytes, cudaStream_t stream, const GemvW4A16Config* config = nullptr);
void gemv_w4a16_batched(const GemvW4A16Problem* problems, int count, DType y_dtype, int64_t in_features,
                        int64_t out_features, int group_size, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream, const GemvW4A16Config* config = nullptr);

// The launcher (no checks, no guard): the current device must be the tensors' device.
void launch_gemv_w4a16(const GemvW4A16Problem* problems, int count, DType y_dtype, int64_t in_features,
                       int64_t out_features, int group_size, void* workspace, const GemvW4A16Config& config,
                       cudaStream_t stream);

// One problem with x f32 [in] (rounded to f16 in registers, as launch_f32_to_f16 would) and y f32 [out]: the decode
// linear without a conversion kernel. Workspace of gemv_w4a16_workspace_bytes(out, 1).
void launch_gemv_w4a16_f32x(const float* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales,
                            float* y, int64_t in, int64_t out, int group_size, void* workspace,
                            const GemvW4A16Config& config, cudaStream_t stream);

// The routed launcher (no checks, no guard): `matrices` · routes.slots ≤ kGemvMaxRoutedProblems problems, all
// matrices of the table [in, out] with `group_size`; workspace of gemv_w4a16_workspace_bytes(out, problems).
void launch_gemv_w4a16_routed(const GemvW4A16Routes& routes, int matrices, DType y_dtype, int64_t in, int64_t out,
                              int group_size, void* workspace, const GemvW4A16Config& config, cudaStream_t stream);

}  // namespace mixq::cuda
