// Launchers of the CUDA backend's ops (one .cu per op; backend_cuda.cu is the one dispatch place and opens the
// device guard and checks the tensors' devices first). Activations are f32 [rows, features]; all pointers are
// device memory of the current device; every launch goes to `stream`.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "tensor.h"  // mixq::DType

namespace mixq::cuda {

// x[n, hidden] = table[ids[t]] (bf16/fp16/f32) widened to f32. ids were range-checked by the caller.
void launch_embed(const void* table, DType dtype, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n, float* x,
                  cudaStream_t stream);

// x[n, heads·hd] rotated in place (rotate_half pairs) at positions[n], inv_freq[hd/2]: the CPU's exact angles
// (f32 product, cos/sin in double rounded to f32).
void launch_rope(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                 cudaStream_t stream);

// ids[r] = argmax of row r of x [rows, n] (lowest index on ties, NaN never wins), rows < 2^31.
void launch_argmax(const float* x, int64_t rows, int64_t n, int32_t* ids, cudaStream_t stream);

// y = a + b; a = silu(a)·b. n elements.
void launch_add(const float* a, const float* b, float* y, int64_t n, cudaStream_t stream);
void launch_swiglu(float* a, const float* b, int64_t n, cudaStream_t stream);
// h[n] (fp16) = silu(a)·b rounded to nearest (a, b f32).
void launch_swiglu_f16(const float* a, const float* b, void* h, int64_t n, cudaStream_t stream);
// y[n] (fp16) = x[n] (f32) rounded to nearest.
void launch_f32_to_f16(const float* x, void* y, int64_t n, cudaStream_t stream);

// y[n, out] = x[n, in] · Wᵀ with W [out, in] dense (bf16/fp16/f32) — or, when `transposed`, W stored [in, out] f32.
// Tiled: 64 outputs × 32 tokens per block, K in steps of 32 through shared memory (f32 accumulation).
void launch_linear_dense(const float* x, const void* w, DType dtype, bool transposed, float* y, int64_t n,
                         int64_t in, int64_t out, cudaStream_t stream);
// The same for AWQ GEMM int4 weights (qweight [in, out/8], qzeros [in/G, out/8], scales fp16 [in/G, out]),
// dequantized while the tile is loaded into shared memory (never into device memory).
void launch_linear_awq(const float* x, const int32_t* qweight, const int32_t* qzeros, const void* scales, int group,
                       float* y, int64_t n, int64_t in, int64_t out, cudaStream_t stream);

// logits[n, E] → ids[n, k], weights[n, k] (softmax, top-k largest first with the lower index on ties,
// renormalised when `renormalize`). E ≤ 256, k ≤ 8.
void launch_router(const float* logits, int64_t n, int num_experts, int k, bool renormalize, int32_t* ids,
                   float* weights, cudaStream_t stream);

// dst[i] = src[rows[i]] for i < m, rows of `width` floats.
void launch_gather_rows(const float* src, const int32_t* rows, int64_t m, int64_t width, float* dst,
                        cudaStream_t stream);
// slots[slot[i]] = y[i] · weights[slot[i]] for i < m (rows of `hidden`).
void launch_scatter_weighted(const float* y, const int32_t* slot, int64_t m, int64_t hidden, const float* weights,
                             float* slots, cudaStream_t stream);

// Routed dense experts (moe_dense.cu): problem z = m·slots + s computes y[z] = W · x[s / x_row_div] (· y_scale[s])
// with W = table[ids[s]·3 + first_matrix + m] ([out, in] bf16/f16/f32, null: not held here → skipped).
// in % (16 / element size) == 0.
struct DenseRoutes {
  const int32_t* expert_of = nullptr;  // [slots] device
  const void* const* table = nullptr;  // [num_experts · 3] device: w1, w3, w2 per expert
  int num_experts = 0;
  int first_matrix = 0;                // 0: w1 then w3; 2: w2
  int slots = 0;
  int x_row_div = 1;
  const float* x = nullptr;            // [rows, in]
  float* y = nullptr;                  // [matrices · slots, out]
  const float* y_scale = nullptr;      // [slots] or null
};
void launch_moe_dense_gemv(const DenseRoutes& r, int matrices, DType dtype, int64_t in, int64_t out,
                           cudaStream_t stream);

// out[t] = Σ_j slots[owner[ids[t, j]]][t·k + j] in ascending expert order (0 + first + …). At most 8 slot tensors.
struct CombineSources {
  const float* slots[8];
  uint8_t owner[256];
};
void launch_moe_combine(const CombineSources& src, const int32_t* ids, int64_t n, int k, int64_t hidden, float* out,
                        cudaStream_t stream);

}  // namespace mixq::cuda
