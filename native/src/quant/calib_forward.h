// The Mixtral / Qwen3-MoE decoder layer for calibration, on the backend op set (the same ops as Context::eval): RMSNorm,
// RoPE, causal GQA attention over independent samples of L tokens, router softmax → top-k → renormalise, SwiGLU
// experts on their routed tokens only. Weights are the quantizer's transposed f32 w_t [in, out], prepared as
// linear handles at each call (so in-place rescaling and fake quantization count); activations are host
// row-major [tokens, features], moved to the backend's device and back.
#pragma once
#include <cstdint>
#include <vector>

#include "core/backend.h"
#include "core/model_config.h"

namespace mixq::quant {

struct Routing {
  std::vector<std::vector<int32_t>> tokens;  // [experts]: token rows routed to the expert, ascending
  std::vector<std::vector<float>> weights;   // [experts]: their renormalised routing weights
};

class CalibForward {
 public:
  // N = samples · seq_len tokens, positions 0..seq_len-1 in every sample.
  CalibForward(const ModelConfig& cfg, int64_t samples, int64_t seq_len, Backend& backend);

  // y[n, out] = x[n, in] · w_t[in, out]
  void matmul(const float* x, int64_t n, int64_t in, const float* w_t, int64_t out, float* y);
  // y[n, hidden] = w ⊙ x / sqrt(mean(x²) + eps)
  void rms_norm(const float* x, int64_t n, const float* w, float* y);
  // out[N, hidden] = o(attention(rope(x·q_t), rope(x·k_t), x·v_t)); ctx (optional) receives o's input [N, q_dim].
  // q_norm / k_norm [head_dim] (Qwen3; null: none): RMSNorm of every head of q and k before RoPE.
  void attention_block(const float* x, const float* q_t, const float* k_t, const float* v_t, const float* o_t,
                       const float* q_norm, const float* k_norm, float* out, std::vector<float>* ctx);
  // Router logits x[n, hidden] · gate_t → softmax → top-k (lower index wins ties) → renormalised when the config
  // says so (Mixtral always; Qwen3-MoE norm_topk_prob).
  Routing route(const float* x, int64_t n, const float* gate_t);
  // One expert on its routed rows a[n_e, hidden]: h[n_e, inter] = silu(a·w1_t) ⊙ (a·w3_t), y[n_e, hidden] = h·w2_t.
  void expert(const float* a, int64_t n_e, const float* w1_t, const float* w3_t, const float* w2_t, float* h,
              float* y);

 private:
  Tensor put(const float* x, std::vector<int64_t> shape, const char* name);
  std::unique_ptr<Linear> handle(const float* w_t, int64_t in, int64_t out);
  void linear(const float* w_t, const Tensor& x, Tensor& y);

  const ModelConfig& cfg_;
  int64_t samples_, seq_len_;
  Backend& be_;
  Tensor positions_, inv_freq_;  // [seq_len] i32, [head_dim/2] f32
};

// Rows `rows` of x [*, d] gathered into dst [rows.size(), d].
void gather_rows(const float* x, int64_t d, const std::vector<int32_t>& rows, float* dst);

}  // namespace mixq::quant
