#include "router.h"

#include <algorithm>
#include <cmath>

namespace mixq {

void router_topk(const float* logits, int num_experts, int k, bool renormalize, int32_t* ids, float* weights) {
  float mx = -INFINITY;
  for (int e = 0; e < num_experts; ++e) mx = std::max(mx, logits[e]);
  float p[kMaxExperts];
  float sum = 0.f;
  for (int e = 0; e < num_experts; ++e) {
    p[e] = std::exp(logits[e] - mx);
    sum += p[e];
  }
  for (int e = 0; e < num_experts; ++e) p[e] /= sum;
  // Selection: k passes of argmax (k is tiny); strict '>' keeps the lower index on ties like torch.topk.
  float chosen_sum = 0.f;
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int e = 0; e < num_experts; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken |= ids[i] == e;
      if (taken) continue;
      if (best < 0 || p[e] > p[best]) best = e;
    }
    ids[j] = best;
    weights[j] = p[best];
    chosen_sum += p[best];
  }
  if (renormalize)
    for (int j = 0; j < k; ++j) weights[j] /= chosen_sum;
}

}  // namespace mixq
