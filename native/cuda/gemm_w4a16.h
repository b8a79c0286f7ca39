// W4A16 GEMM on the tensor cores for AutoAWQ "GEMM"-format weights (prefill): y = x · W, W dequantized on the fly.
//
//   x        fp16  [n, in]              (the caller converts f32 activations first: launch_f32_to_f16)
//   qweight  int32 [in, out/8]          8 nibbles per word along out; nibble slot i of word c = column 8c+ORDER[i],
//                                       ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
//   qzeros   int32 [in/G, out/8]        packed like qweight
//   scales   fp16  [in/G, out]
//   y        f32   [n, out]             y[t][o] = Σ_i x[t][i] · (q[i][o] − z[i/G][o]) · s[i/G][o]
// Limits: in % 32 == 0, G % 32 == 0 (32, 64, 128 in practice; G = in for one group), in % G == 0,
// out % 32 == 0, every pointer 16-byte aligned, n, in, out < 2^31. Any n ≥ 1 (decode n ≤ 8 keeps the GEMV,
// which is faster there); rows and columns past the last tile are masked.
// The packed int4 tile is staged through shared memory and dequantized there to fp16 (never to device memory);
// mma.sync m16n8k16 with f32 accumulation.
//
// Grouped (MoE prefill) form over the output of moe_align_block_size with block size = the GEMM's row tile
// (gemm_w4a16_moe_block_rows): M-block b belongs to expert expert_ids[b] (−1: past the padded length, skipped)
// and holds rows sorted_token_ids[b·B .. b·B+B) (slot ids t·top_k + j; the sentinel numel marks padding).
// Experts whose table entry has qweight == nullptr are not held by this device: their blocks do nothing.
//   gate_up: h[r] = silu(x[slot/top_k] · w1ᵀ) ⊙ (x[slot/top_k] · w3ᵀ)   h fp16 [capacity, inter], r = sorted row;
//            padding rows get 0. Gate and up share the activation tile and are computed in one pass.
//   down:    slots[slot] = route_weights[slot] · (h[r] · w2ᵀ)               slots f32 [numel, hidden];
//            padding rows and slots of unheld experts are not written.
// The grids are sized by moe_align_max_blocks, so nothing needs the host between the routing and the output.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "expert_table.h"

namespace mixq::cuda {

// Row tiles the kernels are built for (the grouped form's moe_align block size must be one of these).
constexpr int kGemmRowTileSmall = 64;
constexpr int kGemmRowTileLarge = 128;

// The row tile the dense entry uses for this shape on `device` (fills the GPU with blocks first).
int gemm_w4a16_row_tile(int64_t n, int64_t out, int device);
// The moe_align block size (= row tile) for `numel` routed slots over `num_experts` experts.
int gemm_w4a16_moe_block_rows(int64_t numel, int num_experts);

// Guarded entry: checks shapes, alignment and that every tensor lives on one GPU, opens a DeviceGuard for it and
// launches on `stream`. Throws mixq::Error naming the problem.
void gemm_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, float* y,
                int64_t n, int64_t in, int64_t out, int group_size, cudaStream_t stream);
// The launcher (no checks, no guard): the current device must be the tensors' device.
void launch_gemm_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, float* y,
                       int64_t n, int64_t in, int64_t out, int group_size, cudaStream_t stream);

// The routing of one grouped launch (all device pointers; the output of moe_align_block_size).
struct MoeRoutes {
  const int32_t* sorted_token_ids = nullptr;     // [moe_align_capacity(numel, E, block_rows)]
  const int32_t* expert_ids = nullptr;           // [moe_align_max_blocks(numel, E, block_rows)]
  const int32_t* num_tokens_post_pad = nullptr;  // [1]
  int64_t numel = 0;                             // tokens · top_k
  int top_k = 1;
  int num_experts = 0;
  int block_rows = kGemmRowTileLarge;            // the moe_align block size: kGemmRowTileSmall or kGemmRowTileLarge
};

// Guarded entries (devices of x/h/slots, the routes, the table and the weights checked; the matrices the table
// points at are the caller's to check when it builds the table).
//   x [tokens, hidden] fp16, table [num_experts] on the device, h [capacity, inter] fp16.
void moe_gemm_w4a16_gate_up(const __half* x, const MoeRoutes& routes, const ExpertMatrices* table, __half* h,
                            int64_t hidden, int64_t inter, int group_size, cudaStream_t stream);
//   route_weights [numel] f32 (the router's weights [tokens, top_k]), slots [numel, hidden] f32.
void moe_gemm_w4a16_down(const __half* h, const MoeRoutes& routes, const ExpertMatrices* table,
                         const float* route_weights, float* slots, int64_t hidden, int64_t inter, int group_size,
                         cudaStream_t stream);
void launch_moe_gemm_w4a16_gate_up(const __half* x, const MoeRoutes& routes, const ExpertMatrices* table, __half* h,
                                   int64_t hidden, int64_t inter, int group_size, cudaStream_t stream);
void launch_moe_gemm_w4a16_down(const __half* h, const MoeRoutes& routes, const ExpertMatrices* table,
                                const float* route_weights, float* slots, int64_t hidden, int64_t inter,
                                int group_size, cudaStream_t stream);

}  // namespace mixq::cuda
