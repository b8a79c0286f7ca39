#include "moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model.h"
#include "thread_pool.h"

namespace mixq {

void router_topk(const float* logits, int num_experts, int k, int32_t* ids, float* weights) {
  float mx = -INFINITY;
  for (int e = 0; e < num_experts; ++e) mx = std::max(mx, logits[e]);
  float probs[256];
  std::vector<float> big;
  float* p = probs;
  if (num_experts > 256) {
    big.resize(size_t(num_experts));
    p = big.data();
  }
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
  for (int j = 0; j < k; ++j) weights[j] /= chosen_sum;
}

void swiglu(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = a[i];
    a[i] = x / (1.0f + std::exp(-x)) * b[i];
  }
}

void moe_forward(const LayerWeights& layer, int top_k, const float* x, int64_t n, int64_t hidden, float* out,
                 ThreadPool& pool, const MoeTrace& trace) {
  const int E = int(layer.experts.size());
  std::vector<float> logits(size_t(n) * E);
  layer.gate->forward(x, n, logits.data(), pool);
  std::vector<int32_t> ids(size_t(n) * top_k);
  std::vector<float> wts(size_t(n) * top_k);
  for (int64_t t = 0; t < n; ++t) router_topk(&logits[t * E], E, top_k, &ids[t * top_k], &wts[t * top_k]);
  if (trace.router_logits) *trace.router_logits = logits;
  if (trace.topk_ids) *trace.topk_ids = ids;

  std::fill(out, out + n * hidden, 0.f);
  const int64_t inter = layer.experts[0].w1->out_features;
  std::vector<int64_t> rows;      // tokens routed to the current expert
  std::vector<float> rows_w;      // their routing weights
  std::vector<float> xin, a, b, y;
  for (int e = 0; e < E; ++e) {
    rows.clear();
    rows_w.clear();
    for (int64_t t = 0; t < n; ++t)
      for (int j = 0; j < top_k; ++j)
        if (ids[t * top_k + j] == e) {
          rows.push_back(t);
          rows_w.push_back(wts[t * top_k + j]);
        }
    if (rows.empty()) continue;
    const int64_t m = int64_t(rows.size());
    const float* xe = x;
    if (m != n) {  // gather the routed tokens: xin [m, hidden]
      xin.resize(size_t(m * hidden));
      for (int64_t r = 0; r < m; ++r) std::copy(x + rows[r] * hidden, x + (rows[r] + 1) * hidden, &xin[r * hidden]);
      xe = xin.data();
    }
    a.resize(size_t(m * inter));
    b.resize(size_t(m * inter));
    y.resize(size_t(m * hidden));
    const ExpertWeights& ex = layer.experts[e];
    ex.w1->forward(xe, m, a.data(), pool);
    ex.w3->forward(xe, m, b.data(), pool);
    swiglu(a.data(), b.data(), m * inter);
    ex.w2->forward(a.data(), m, y.data(), pool);
    for (int64_t r = 0; r < m; ++r) {
      float* o = out + rows[r] * hidden;
      const float* yr = &y[r * hidden];
      const float w = rows_w[r];
      for (int64_t i = 0; i < hidden; ++i) o[i] += yr[i] * w;
    }
  }
}

}  // namespace mixq
