// Attention on the GPU over f16 KV caches (the CUDA backend's Backend::attention). Every kernel reads the tokens'
// positions from the device (positions[t] = n_past + t) and sizes its grid from the cache capacity and the token
// count only, never from a host n_past: a launch captured in a CUDA graph stays valid for every later step while
// the positions tensor moves on.
//   1. kv_append: k, v [n, kv_heads·hd] f32 → f16 cache rows positions[t] (rows outside [0, capacity) skipped).
//   2. decode (n ≤ kDecodeMaxTokens and n·group ≤ kDecodeMaxRows): split-K ("flash decoding") over the whole
//      cache — one block per (64-key chunk, kv head) holding the head's GQA group, chunks past the last position
//      or before every token's window exit at once — then a merge of the per-chunk (max, sum, acc) in ascending
//      chunk order (deterministic). f32 q, scores, softmax and accumulation; only K/V are 16-bit.
//   3. prefill (larger n): tiled causal flash attention with GQA and sliding window on f16 tensor cores
//      (mma.sync m16n8k16, f32 accumulation and softmax); q rounded to f16 on load (after scaling).
// Limits: head_dim ∈ {32, 64, 96, 128}; capacity < 2^31; heads % kv_heads == 0.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mixq::cuda {

constexpr int kDecodeMaxTokens = 8;
constexpr int kDecodeMaxRows = 64;  // query rows of one decode block: tokens × GQA group

struct AttentionDims {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int window = 0;         // 0 = full causal; else keys in (pos − window, pos]
  int64_t capacity = 0;   // cache rows
};

bool attention_head_dim_supported(int head_dim);
// Whether `n` tokens take the split-K decode path (else prefill).
bool attention_use_decode(int64_t n, const AttentionDims& d);

// k, v: [n, kv_dim] f32; caches [capacity, kv_dim] f16; positions [n] i32 (device).
void launch_kv_append(const float* k, const float* v, const int32_t* positions, int64_t n, int64_t kv_dim,
                      int64_t capacity, __half* k_cache, __half* v_cache, cudaStream_t stream);

// Bytes of the split-K partials for n tokens: chunks × n × heads × (head_dim + 2) f32.
size_t attention_decode_workspace_bytes(int64_t n, const AttentionDims& d);
// q, out: [n, heads·hd] f32; workspace: attention_decode_workspace_bytes (no initialisation needed).
void launch_attention_decode(const float* q, const __half* k_cache, const __half* v_cache, const int32_t* positions,
                             int64_t n, const AttentionDims& d, float* workspace, float* out, cudaStream_t stream);

// q, out: [n, heads·hd] f32; positions must be consecutive (positions[t] = positions[0] + t).
void launch_attention_prefill(const float* q, const __half* k_cache, const __half* v_cache, const int32_t* positions,
                              int64_t n, const AttentionDims& d, float* out, cudaStream_t stream);

}  // namespace mixq::cuda
