// Causal grouped-query attention over a KV cache, with an optional sliding window.
#pragma once
#include <cstdint>

namespace mixq {

struct AttentionShape {
  int heads = 0;     // query heads
  int kv_heads = 0;  // key/value heads; query head h reads kv head h / (heads / kv_heads)
  int head_dim = 0;
  int window = 0;    // 0 = full causal; else a query at position p sees keys in (p - window, p]
};

// Limits: heads % kv_heads == 0; head_dim even. KV cache rows are positions: k_cache, v_cache
// [capacity, kv_heads*head_dim] f32 (keys after RoPE).
//
// The oracle (plain, single-threaded, double accumulation):
// q: [n, heads*head_dim] (rotated) for positions [n_past, n_past + n);
// k_cache, v_cache: [≥ n_past + n, kv_heads*head_dim], already holding these positions;
// out: [n, heads*head_dim]. Softmax with max subtraction; scores scaled by 1/sqrt(head_dim).
void attention_reference(const float* q, int64_t n, int64_t n_past, const float* k_cache, const float* v_cache,
                         const AttentionShape& s, float* out);

}  // namespace mixq
