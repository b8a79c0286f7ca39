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

  // Group the routed (token, weight) pairs by expert, ascending expert id.
  struct Route {
    int expert = 0;
    std::vector<int64_t> rows;  // tokens routed to this expert
    std::vector<float> weights; // their routing weights
    std::vector<float> y;       // expert output [rows, hidden]
  };
  std::vector<Route> routes;
  for (int e = 0; e < E; ++e) {
    Route r;
    r.expert = e;
    for (int64_t t = 0; t < n; ++t)
      for (int j = 0; j < top_k; ++j)
        if (ids[t * top_k + j] == e) {
          r.rows.push_back(t);
          r.weights.push_back(wts[t * top_k + j]);
        }
    if (!r.rows.empty()) routes.push_back(std::move(r));
  }

  // y = w2(silu(w1·x) * (w3·x)) over the expert's tokens only.
  const int64_t inter = layer.experts[0].w1->out_features;
  auto run_expert = [&](Route& r, ThreadPool& p) {
    const int64_t m = int64_t(r.rows.size());
    std::vector<float> xin;
    const float* xe = x;
    if (m != n) {  // gather the routed tokens: xin [m, hidden]
      xin.resize(size_t(m * hidden));
      for (int64_t i = 0; i < m; ++i) std::copy(x + r.rows[i] * hidden, x + (r.rows[i] + 1) * hidden, &xin[i * hidden]);
      xe = xin.data();
    }
    std::vector<float> a(size_t(m * inter)), b(size_t(m * inter));
    r.y.resize(size_t(m * hidden));
    const ExpertWeights& ex = layer.experts[size_t(r.expert)];
    ex.w1->forward(xe, m, a.data(), p);
    ex.w3->forward(xe, m, b.data(), p);
    swiglu(a.data(), b.data(), m * inter);
    ex.w2->forward(a.data(), m, r.y.data(), p);
  };
  // A few tokens (decode) with at least one routed expert per thread: one expert per thread, each
  // streaming its three matrices alone — one fork-join per layer instead of three per expert.
  // Otherwise experts run one after another, each matmul split over the pool. Either way every
  // matmul computes the same sums, so the results are identical.
  if (n <= 4 && pool.size() > 1 && int(routes.size()) >= pool.size()) {
    pool.parallel_for(int64_t(routes.size()), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) run_expert(routes[size_t(i)], pool);  // nested: runs inline
    });
  } else {
    for (Route& r : routes) run_expert(r, pool);
  }

  // out[t] = Σ weight · y, in ascending expert order (as transformers' loop over experts).
  std::fill(out, out + n * hidden, 0.f);
  for (const Route& r : routes) {
    for (size_t i = 0; i < r.rows.size(); ++i) {
      float* o = out + r.rows[i] * hidden;
      const float* yr = &r.y[i * size_t(hidden)];
      const float w = r.weights[i];
      for (int64_t k = 0; k < hidden; ++k) o[k] += yr[k] * w;
    }
  }
}

}  // namespace mixq
