// Sparse mixture-of-experts block after the router (Mixtral, Qwen3-MoE), split in two ops so that experts can
// live on several devices:
//   1. moe_experts, per device: for the routed slots (t, j) of its experts only,
//        slots[t·k + j] = weight[t, j] · w2(silu(w1·x[t]) ⊙ (w3·x[t]))        slots: [n·k, hidden]
//   2. moe_combine, on the layer's device: out[t] = Σ_j slot(t, j), the k slots of a token added in ascending
//      expert order starting from 0 (as transformers' loop over experts), each slot read from the device that
//      owns its expert. The order never depends on the placement, so every placement gives the same bits.
#pragma once
#include <cstdint>
#include <vector>

namespace mixq {

class Linear;

// silu(a) * b elementwise, in place into a. a, b: [n].
void swiglu(float* a, const float* b, int64_t n);

// The oracle of moe_experts: x [n, hidden], ids/weights [n, k]; w1/w2/w3 [E] (null = not held: slot untouched);
// slots [n·k, hidden]. Plain loops over Linear::weight_row with double accumulation.
void moe_experts_reference(const std::vector<const Linear*>& w1, const std::vector<const Linear*>& w2,
                           const std::vector<const Linear*>& w3, const float* x, int64_t n, int64_t hidden,
                           const int32_t* ids, const float* weights, int k, float* slots);

// The oracle (and CPU implementation) of moe_combine. slots[d]: [n·k, hidden]; owner [E]: index into slots.
void moe_combine_rows(const std::vector<const float*>& slots, const std::vector<int>& owner, const int32_t* ids,
                      int64_t n, int k, int64_t hidden, float* out);

}  // namespace mixq
