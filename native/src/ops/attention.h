// Causal grouped-query attention over a KV cache, with an optional sliding window.
#pragma once
#include <cstdint>

#include "linear_dense.h"  // DenseIsa: the SIMD level

namespace mixq {

class ThreadPool;

struct AttentionShape {
  int heads = 0;     // query heads
  int kv_heads = 0;  // key/value heads; query head h reads kv head h / (heads / kv_heads)
  int head_dim = 0;
  int window = 0;    // 0 = full causal; else a query at position p sees keys in (p - window, p]
};

// q: [n, heads*head_dim] (rotated) for positions [n_past, n_past + n);
// k_cache, v_cache: [≥ n_past + n, kv_heads*head_dim] (rotated keys), already holding these positions;
// out: [n, heads*head_dim]. Softmax in f32 with max subtraction; scores scaled by 1/sqrt(head_dim).
void attention(const float* q, int64_t n, int64_t n_past, const float* k_cache, const float* v_cache,
               const AttentionShape& s, float* out, ThreadPool& pool);

// Same, forcing a SIMD level (tests compare every level this CPU supports against the reference).
void attention_isa(DenseIsa isa, const float* q, int64_t n, int64_t n_past, const float* k_cache,
                   const float* v_cache, const AttentionShape& s, float* out, ThreadPool& pool);

// The plain single-threaded loop the fast path is tested against.
void attention_reference(const float* q, int64_t n, int64_t n_past, const float* k_cache, const float* v_cache,
                         const AttentionShape& s, float* out);

}  // namespace mixq
