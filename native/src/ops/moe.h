// Sparse mixture-of-experts block (Mixtral):
//   1. router logits = gate(x)                     [n, E]
//   2. probs = softmax(logits) in f32; top-k experts per token; weights renormalised to sum 1
//   3. per expert, only the tokens routed to it:  y_e = w2(silu(w1·x) * (w3·x))
//   4. out[t] = Σ_j weight[t, j] · y_{expert[t, j]}[t]   (summed in ascending expert order, as transformers)
#pragma once
#include <cstdint>
#include <vector>

namespace mixq {

class ThreadPool;
struct LayerWeights;

// probs/top-k for one token. logits: [E]; ids: [k] (largest probability first, lower index on ties);
// weights: [k] renormalised softmax probabilities.
void router_topk(const float* logits, int num_experts, int k, int32_t* ids, float* weights);

// silu(a) * b elementwise, in place into a. a, b: [n].
void swiglu(float* a, const float* b, int64_t n);

// What moe_forward can report (for captures); pass nullptr to skip.
struct MoeTrace {
  std::vector<float>* router_logits = nullptr;   // [n, E]
  std::vector<int32_t>* topk_ids = nullptr;      // [n, k]
};

// x: [n, hidden] (post-attention-normed); out: [n, hidden] (overwritten).
void moe_forward(const LayerWeights& layer, int top_k, const float* x, int64_t n, int64_t hidden, float* out,
                 ThreadPool& pool, const MoeTrace& trace);

}  // namespace mixq
