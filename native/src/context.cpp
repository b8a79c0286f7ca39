// Context::eval — the forward pass over a batch of new tokens at positions [n_past, n_past + n):
//   x = embed(tokens)                                   [n, hidden]
//   per layer: x += o(attn(rope(q(norm1 x)), rope(k(norm1 x)), v(norm1 x)))
//              x += moe(norm2 x)
//   logits = lm_head(norm_final x)                      [n or 1, vocab]
#include <algorithm>
#include <chrono>
#include <cstring>

#include "engine.h"
#include "kv_cache.h"
#include "model.h"
#include "ops/attention.h"
#include "ops/moe.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "thread_pool.h"

namespace mixq {

struct Context::Impl {
  std::shared_ptr<Model> model;
  KvCache cache;
  std::vector<int32_t> tokens;  // ids held by the cache, position i = tokens[i]
  std::vector<float> inv_freq;  // [head_dim/2]
};

Context::Context(std::shared_ptr<Model> model, int capacity) : impl(std::make_unique<Impl>()) {
  if (!model) throw Error("Context: no model");
  const ModelConfig& c = model->config();
  if (capacity <= 0) capacity = model->options().context_length;
  if (capacity <= 0) capacity = std::min(c.max_position_embeddings, 4096);
  impl->cache.init(c.num_hidden_layers, capacity, int64_t(c.num_key_value_heads) * c.head_dim);
  impl->inv_freq = rope_inv_freq(c.rope_theta, c.head_dim);
  impl->model = std::move(model);
}

Context::~Context() = default;

int Context::n_past() const { return int(impl->tokens.size()); }
int Context::capacity() const { return impl->cache.capacity; }
const std::vector<int32_t>& Context::cached_tokens() const { return impl->tokens; }
Model& Context::model() const { return *impl->model; }

void Context::truncate(int n) {
  if (n < 0) n = 0;
  if (size_t(n) < impl->tokens.size()) impl->tokens.resize(size_t(n));
}

void Context::eval(const std::vector<int32_t>& tokens, EvalCapture& out) {
  const Model& m = *impl->model;
  const ModelConfig& c = m.config();
  const ModelWeights& W = m.weights();
  ThreadPool& pool = m.pool();
  const int64_t n = int64_t(tokens.size());
  const int64_t n_past = int64_t(impl->tokens.size());
  if (n == 0) throw Error("eval: no tokens");
  if (n_past + n > impl->cache.capacity) {
    throw Error("context full: " + std::to_string(n_past) + " cached + " + std::to_string(n) +
                " new tokens exceed the capacity of " + std::to_string(impl->cache.capacity));
  }
  const int64_t hidden = c.hidden_size, hd = c.head_dim;
  const int64_t q_dim = int64_t(c.num_attention_heads) * hd, kv_dim = impl->cache.kv_dim;
  const int L = c.num_hidden_layers;
  using clock = std::chrono::steady_clock;
  auto ms_between = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const auto t_start = clock::now();
  out.layer_ms.assign(out.timing ? size_t(L) : 0, 0.0);
  double head_ms = 0;

  std::vector<float> x(size_t(n * hidden)), xn(x.size()), tmp(x.size());
  std::vector<float> q(size_t(n * q_dim)), att(q.size()), k(size_t(n * kv_dim)), v(k.size());
  for (int64_t t = 0; t < n; ++t) W.embed_row(tokens[size_t(t)], &x[t * hidden]);

  out.logits.clear();
  out.hidden_states.clear();
  out.router.clear();
  out.topk_experts.clear();
  if (out.hidden) out.hidden_states.push_back(x);
  if (out.router_logits) {
    out.router.resize(size_t(L));
    out.topk_experts.resize(size_t(L));
  }

  // cos/sin per new position: [n, hd/2]
  const int64_t half = hd / 2;
  std::vector<float> cosv(size_t(n * half)), sinv(cosv.size());
  for (int64_t t = 0; t < n; ++t) rope_cos_sin(impl->inv_freq, n_past + t, &cosv[t * half], &sinv[t * half]);

  auto t_layer = clock::now();
  head_ms += ms_between(t_start, t_layer);
  AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, int(hd), c.sliding_window};
  const float eps = float(c.rms_norm_eps);
  for (int l = 0; l < L; ++l) {
    const LayerWeights& lw = W.layers[size_t(l)];
    rms_norm(x.data(), lw.attn_norm.data(), n, hidden, eps, xn.data());
    lw.q->forward(xn.data(), n, q.data(), pool);
    lw.k->forward(xn.data(), n, k.data(), pool);
    lw.v->forward(xn.data(), n, v.data(), pool);
    for (int64_t t = 0; t < n; ++t) {
      rope_apply(&q[t * q_dim], c.num_attention_heads, int(hd), &cosv[t * half], &sinv[t * half]);
      rope_apply(&k[t * kv_dim], c.num_key_value_heads, int(hd), &cosv[t * half], &sinv[t * half]);
    }
    float* kc = impl->cache.k_layer(l);
    float* vc = impl->cache.v_layer(l);
    std::memcpy(kc + n_past * kv_dim, k.data(), k.size() * sizeof(float));
    std::memcpy(vc + n_past * kv_dim, v.data(), v.size() * sizeof(float));
    attention(q.data(), n, n_past, kc, vc, shape, att.data(), pool);
    lw.o->forward(att.data(), n, tmp.data(), pool);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];

    rms_norm(x.data(), lw.post_attn_norm.data(), n, hidden, eps, xn.data());
    MoeTrace trace;
    if (out.router_logits) {
      trace.router_logits = &out.router[size_t(l)];
      trace.topk_ids = &out.topk_experts[size_t(l)];
    }
    moe_forward(lw, c.num_experts_per_tok, xn.data(), n, hidden, tmp.data(), pool, trace);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
    if (out.hidden && l + 1 < L) out.hidden_states.push_back(x);
    if (out.timing) {
      const auto now = clock::now();
      out.layer_ms[size_t(l)] = ms_between(t_layer, now);
      t_layer = now;
    }
  }
  const auto t_head = clock::now();

  rms_norm(x.data(), W.final_norm.data(), n, hidden, eps, xn.data());
  if (out.hidden) out.hidden_states.push_back(xn);
  const int64_t vocab = c.vocab_size;
  if (out.all_logits) {
    out.logits.resize(size_t(n * vocab));
    W.lm_head->forward(xn.data(), n, out.logits.data(), pool);
  } else {
    out.logits.resize(size_t(vocab));
    W.lm_head->forward(&xn[(n - 1) * hidden], 1, out.logits.data(), pool);
  }
  impl->tokens.insert(impl->tokens.end(), tokens.begin(), tokens.end());
  out.head_ms = head_ms + ms_between(t_head, clock::now());
}

}  // namespace mixq
