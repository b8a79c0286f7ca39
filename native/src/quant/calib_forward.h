// The Mixtral decoder layer in plain f32 for calibration (transformers semantics, like the engine's reference
// path): RMSNorm, RoPE (rotate_half), causal GQA attention over independent samples of L tokens, router
// softmax → top-k → renormalise, SwiGLU experts on their routed tokens only. Weights are transposed,
// w_t [in, out] (the quantizer's layout); activations row-major [tokens, features].
#pragma once
#include <cstdint>
#include <vector>

namespace mixq {
class ThreadPool;
}

namespace mixq::quant {

struct AttentionShape {
  int64_t samples = 0, seq_len = 0;  // tokens N = samples · seq_len, positions 0..L-1 in every sample
  int heads = 0, kv_heads = 0, head_dim = 0;
  double rope_theta = 1e6;
};

// y[n, d] = x / sqrt(mean(x²) + eps) · w
void rms_norm_rows(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y, ThreadPool& pool);

// ctx[N, heads·hd] = softmax(rope(q)·rope(k)ᵀ / sqrt(hd), causal) · v for q [N, heads·hd], k/v [N, kv·hd].
void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& shape, float* ctx,
                      ThreadPool& pool);

// The self-attention block: out[N, d] = attention(x·q_t, x·k_t, x·v_t) · o_t. ctx (optional) receives the
// o_proj input [N, heads·hd].
void attention_block(const float* x, int64_t d, const float* q_t, const float* k_t, const float* v_t, const float* o_t,
                     const AttentionShape& shape, float* out, std::vector<float>* ctx, ThreadPool& pool);

struct Routing {
  std::vector<std::vector<int32_t>> tokens;  // [experts]: token rows routed to the expert, ascending
  std::vector<std::vector<float>> weights;   // [experts]: their renormalised routing weights
};
// Router logits x[N, d] · gate_t[d, E] → softmax (f32) → top-k (lower index wins ties) → renormalised.
Routing route_tokens(const float* x, int64_t n, int64_t d, const float* gate_t, int experts, int top_k,
                     ThreadPool& pool);

// One expert on its routed rows: a[n_e, d] (gathered), h[n_e, inter] = silu(a·w1_t) ⊙ (a·w3_t),
// y[n_e, d] = h·w2_t.
void expert_forward(const float* a, int64_t n_e, int64_t d, int64_t inter, const float* w1_t, const float* w3_t,
                    const float* w2_t, float* h, float* y, ThreadPool& pool);

// Rows `rows` of x [*, d] gathered into dst [rows.size(), d].
void gather_rows(const float* x, int64_t d, const std::vector<int32_t>& rows, float* dst);

}  // namespace mixq::quant
