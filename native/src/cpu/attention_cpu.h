// The CPU attention kernels (scalar, AVX2, AVX-512) over an f32 KV cache; see ops/attention.h for shapes.
#pragma once
#include <cstdint>

#include "linear_dense.h"  // DenseIsa: the SIMD level
#include "ops/attention.h"

namespace mixq {

class ThreadPool;

// q: [n, heads*head_dim] (rotated) for positions [n_past, n_past + n); k_cache, v_cache: [≥ n_past + n,
// kv_heads*head_dim] already holding these positions; out: [n, heads*head_dim]. Softmax in f32.
void attention(const float* q, int64_t n, int64_t n_past, const float* k_cache, const float* v_cache,
               const AttentionShape& s, float* out, ThreadPool& pool);

// Same, forcing a SIMD level (tests compare every level this CPU supports against the reference).
void attention_isa(DenseIsa isa, const float* q, int64_t n, int64_t n_past, const float* k_cache,
                   const float* v_cache, const AttentionShape& s, float* out, ThreadPool& pool);

}  // namespace mixq
