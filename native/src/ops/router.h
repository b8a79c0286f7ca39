// The MoE router after the gate matmul: softmax → top-k → optional renormalisation.
//   probs = softmax(logits) in f32 (max subtracted)
//   ids = the k largest probabilities, largest first, the lower expert index on ties (as torch.topk)
//   weights = probs[ids], divided by their sum when `renormalize` (Mixtral; Qwen3-MoE's norm_topk_prob)
// Limits: 1 ≤ k ≤ 8, k ≤ E ≤ 256.
#pragma once
#include <cstdint>

namespace mixq {

constexpr int kMaxExperts = 256;
constexpr int kMaxTopK = 8;

// One token. logits: [E]; ids: [k]; weights: [k]. The plain reference, also the CPU implementation.
void router_topk(const float* logits, int num_experts, int k, bool renormalize, int32_t* ids, float* weights);

}  // namespace mixq
