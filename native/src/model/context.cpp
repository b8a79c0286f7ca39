// Context::eval — the forward pass over a batch of new tokens at positions [n_past, n_past + n), written once over
// the backend op set; the placement plan says which device runs each part, and a copy moves the activations
// wherever the device changes:
//   x = embed(tokens)                                   [n, hidden]
//   per layer: x += o(attn(rope(q(norm1 x)), rope(k(norm1 x)), v(norm1 x)))     (KV cache on the layer's device;
//                   Qwen3: q and k RMS-normed per head before RoPE)
//              ids, w = router(gate(norm2 x));  x += Σ_j w_j · expert_{ids_j}(norm2 x)   (experts on their devices)
//              or, in a dense-MLP layer (Qwen3-MoE mlp_only_layers): x += down(silu(gate(norm2 x)) ⊙ up(norm2 x))
//   logits = lm_head(norm_final x)                      [n or 1, vocab]
#include <algorithm>
#include <chrono>
#include <map>

#include "engine.h"
#include "model.h"
#include "ops/rope.h"

namespace mixq {

struct Context::Impl {
  std::shared_ptr<Model> model;
  int capacity = 0;
  std::vector<Tensor> k_cache, v_cache;  // [layer]: [capacity, kv_heads*head_dim] f32 on the layer's device
  std::vector<Tensor> inv_freq;          // [device]: [head_dim/2] f32 (empty where unused)
  std::vector<int32_t> tokens;           // ids held by the cache, position i = tokens[i]
  // Activations kept from one eval to the next: one tensor per (device, role), reallocated when its shape changes
  // (a decode loop allocates nothing).
  std::map<std::pair<int, std::string>, Tensor> workspace;
  Tensor& scratch(Backend& b, int d, DType dt, std::vector<int64_t> shape, const std::string& role) {
    Tensor& t = workspace[{d, role}];
    if (!t.buffer || t.shape != shape || t.dtype != dt) t = b.empty(dt, std::move(shape), role);
    return t;
  }
};

Context::Context(std::shared_ptr<Model> model, int capacity) : impl(std::make_unique<Impl>()) {
  if (!model) throw Error("Context: no model");
  const ModelConfig& c = model->config();
  if (capacity <= 0) capacity = model->options().context_length;
  if (capacity <= 0) capacity = std::min(c.max_position_embeddings, 4096);
  Model::Impl& m = *model->impl;
  const int64_t kv_dim = int64_t(c.num_key_value_heads) * c.head_dim;
  impl->capacity = capacity;
  const std::vector<float> inv = rope_inv_freq(c.rope_theta, c.head_dim);
  impl->inv_freq.resize(m.backends.size());
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int d = m.plan.layer[size_t(l)];
    Backend& B = *m.backends[size_t(d)];
    // Large allocations are mapped lazily: only positions actually written become resident.
    impl->k_cache.push_back(B.empty(DType::F32, {capacity, kv_dim}, "layer " + std::to_string(l) + " k_cache"));
    impl->v_cache.push_back(B.empty(DType::F32, {capacity, kv_dim}, "layer " + std::to_string(l) + " v_cache"));
    if (!impl->inv_freq[size_t(d)].buffer) {
      impl->inv_freq[size_t(d)] = B.empty(DType::F32, {int64_t(inv.size())}, "rope inv_freq");
      B.from_host(inv.data(), inv.size() * sizeof(float), impl->inv_freq[size_t(d)]);
    }
  }
  impl->model = std::move(model);
}

Context::~Context() = default;

int Context::n_past() const { return int(impl->tokens.size()); }
int Context::capacity() const { return impl->capacity; }
const std::vector<int32_t>& Context::cached_tokens() const { return impl->tokens; }
Model& Context::model() const { return *impl->model; }

void Context::truncate(int n) {
  if (n < 0) n = 0;
  if (size_t(n) < impl->tokens.size()) impl->tokens.resize(size_t(n));
}

namespace {

// The model's devices as seen by one eval: moves tensors between them, allocates, captures to the host.
struct Devices {
  Model::Impl& m;
  Backend& at(int d) const { return *m.backends[size_t(d)]; }
  int index_of(const Tensor& t) const {
    for (size_t i = 0; i < m.backends.size(); ++i)
      if (m.backends[i]->device() == t.device()) return int(i);
    throw Error("tensor " + t.name + " lives on " + t.device().str() + ", which this model does not use");
  }
  // `t` on device `d`: itself when already there, else a copy ordered after t's producer.
  Tensor to(const Tensor& t, int d) const {
    const int s = index_of(t);
    if (s == d) return t;
    Tensor out = at(d).empty(t.dtype, t.shape, t.name);
    Backend& runner = at(d).device().kind != DeviceKind::Cpu ? at(d) : at(s);
    const auto done = at(s).record();
    runner.wait(*done);
    runner.copy(t, out);
    if (&runner != &at(d)) at(d).wait(*runner.record());
    return out;
  }
  template <class T>
  std::vector<T> host(const Tensor& t) const {
    std::vector<T> v(size_t(t.numel()));
    at(index_of(t)).to_host(t, v.data(), v.size() * sizeof(T));
    return v;
  }
};

// A dense SwiGLU MLP: out[n, hidden] = w2(silu(w1 · xn) ⊙ (w3 · xn)); a, u: [n, inter] scratch.
void dense_mlp(Backend& B, const ExpertWeights& mlp, const Tensor& xn, Tensor& a, Tensor& u, Tensor& out) {
  B.linear(*mlp.w1, xn, a);
  B.linear(*mlp.w3, xn, u);
  B.swiglu(a, u);
  B.linear(*mlp.w2, a, out);
}

}  // namespace

void Context::eval(const std::vector<int32_t>& tokens, EvalCapture& out) {
  Model::Impl& m = *impl->model->impl;
  const ModelConfig& c = m.config;
  const ModelWeights& W = m.weights;
  const Plan& plan = m.plan;
  const Devices dev{m};
  const int64_t n = int64_t(tokens.size());
  const int64_t n_past = int64_t(impl->tokens.size());
  if (n == 0) throw Error("eval: no tokens");
  for (int32_t id : tokens)  // here, on the host: a device's embedding kernel cannot report a bad id
    if (id < 0 || id >= c.vocab_size) {
      throw Error("token id " + std::to_string(id) + " is out of range (vocab size " + std::to_string(c.vocab_size) + ")");
    }
  if (n_past + n > impl->capacity) {
    throw Error("context full: " + std::to_string(n_past) + " cached + " + std::to_string(n) +
                " new tokens exceed the capacity of " + std::to_string(impl->capacity));
  }
  const ProfileScope step(m.steps, n == 1 ? "decode" : "prefill");  // the timeline's step bounds (when profiling)
  const int64_t hidden = c.hidden_size, hd = c.head_dim, vocab = c.vocab_size;
  const int64_t q_dim = int64_t(c.num_attention_heads) * hd, kv_dim = int64_t(c.num_key_value_heads) * hd;
  const int L = c.num_hidden_layers, K = c.num_experts_per_tok;
  using clock = std::chrono::steady_clock;
  auto ms_between = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const auto t_start = clock::now();
  out.layer_ms.assign(out.timing ? size_t(L) : 0, 0.0);
  out.logits.clear();
  out.hidden_states.clear();
  out.router.clear();
  out.topk_experts.clear();
  if (out.router_logits) {
    out.router.resize(size_t(L));
    out.topk_experts.resize(size_t(L));
  }

  // Token ids and positions [n] i32 on each device that needs them.
  std::vector<int32_t> pos_host(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) pos_host[size_t(t)] = int32_t(n_past + t);
  std::vector<bool> positions_set(m.backends.size(), false);
  auto positions_on = [&](int d) -> const Tensor& {
    Tensor& p = impl->scratch(dev.at(d), d, DType::I32, {n}, "positions");
    if (!positions_set[size_t(d)]) {
      dev.at(d).from_host(pos_host.data(), pos_host.size() * sizeof(int32_t), p);
      positions_set[size_t(d)] = true;
    }
    return p;
  };
  auto scratch = [&](int d, DType dt, std::vector<int64_t> shape, const char* role) -> Tensor& {
    return impl->scratch(dev.at(d), d, dt, std::move(shape), role);
  };

  int cur = plan.embed;
  Tensor& ids = scratch(cur, DType::I32, {n}, "token ids");
  dev.at(cur).from_host(tokens.data(), tokens.size() * sizeof(int32_t), ids);
  Tensor x = scratch(cur, DType::F32, {n, hidden}, "x");
  dev.at(cur).embed(W.embed, ids, x);
  if (out.hidden) out.hidden_states.push_back(dev.host<float>(x));

  auto t_layer = clock::now();
  const double head_ms = ms_between(t_start, t_layer);
  const AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, int(hd), c.sliding_window};
  const float eps = float(c.rms_norm_eps);
  auto end_layer = [&](int l, Backend& B) {
    if (out.hidden && l + 1 < L) out.hidden_states.push_back(dev.host<float>(x));
    if (out.timing) {
      B.synchronize();
      const auto now = clock::now();
      out.layer_ms[size_t(l)] = ms_between(t_layer, now);
      t_layer = now;
    }
  };
  for (int l = 0; l < L; ++l) {
    const LayerWeights& lw = W.layers[size_t(l)];
    const int d = plan.layer[size_t(l)];
    if (d != cur) x = dev.to(x, d);  // a layer-split boundary
    cur = d;
    Backend& B = dev.at(d);
    Tensor& xn = scratch(d, DType::F32, {n, hidden}, "x normed");
    Tensor& q = scratch(d, DType::F32, {n, q_dim}, "q");
    Tensor& att = scratch(d, DType::F32, {n, q_dim}, "attention out");
    Tensor& k = scratch(d, DType::F32, {n, kv_dim}, "k");
    Tensor& v = scratch(d, DType::F32, {n, kv_dim}, "v");
    Tensor& tmp = scratch(d, DType::F32, {n, hidden}, "block out");
    B.rms_norm(x, lw.attn_norm, eps, xn);
    B.linear(*lw.q, xn, q);
    B.linear(*lw.k, xn, k);
    B.linear(*lw.v, xn, v);
    if (lw.q_norm.buffer) {  // per-head RMSNorm: rows = n·heads, d = head_dim
      Tensor qh = q.reshaped({n * c.num_attention_heads, hd}), kh = k.reshaped({n * c.num_key_value_heads, hd});
      B.rms_norm(qh, lw.q_norm, eps, qh);
      B.rms_norm(kh, lw.k_norm, eps, kh);
    }
    B.rope(q, positions_on(d), impl->inv_freq[size_t(d)], c.num_attention_heads, int(hd));
    B.rope(k, positions_on(d), impl->inv_freq[size_t(d)], c.num_key_value_heads, int(hd));
    B.attention(q, k, v, impl->k_cache[size_t(l)], impl->v_cache[size_t(l)], n_past, shape, att);
    B.linear(*lw.o, att, tmp);
    B.add(x, tmp, x);

    B.rms_norm(x, lw.post_attn_norm, eps, xn);
    if (lw.dense()) {
      const int64_t di = lw.mlp.w1->out_features;
      Tensor& a = scratch(d, DType::F32, {n, di}, "mlp gate");
      Tensor& u = scratch(d, DType::F32, {n, di}, "mlp up");
      dense_mlp(B, lw.mlp, xn, a, u, tmp);
      B.add(x, tmp, x);
      end_layer(l, B);
      continue;
    }
    Tensor& logits = scratch(d, DType::F32, {n, c.num_local_experts}, "router logits");
    Tensor& expert_ids = scratch(d, DType::I32, {n, K}, "expert ids");
    Tensor& expert_w = scratch(d, DType::F32, {n, K}, "expert weights");
    B.linear(*lw.gate, xn, logits);
    B.router(logits, K, c.norm_topk_prob, expert_ids, expert_w);
    if (out.router_logits) {
      out.router[size_t(l)] = dev.host<float>(logits);
      out.topk_experts[size_t(l)] = dev.host<int32_t>(expert_ids);
    }
    // Experts on the devices holding them; their slots come back to this layer's device to be combined.
    std::vector<Tensor> slots;
    std::vector<int> owner(size_t(c.num_local_experts), 0);
    for (int e_dev : plan.expert_devices(l)) {
      Backend& E = dev.at(e_dev);
      Tensor& s = scratch(e_dev, DType::F32, {n * K, hidden}, "expert slots");
      E.moe_experts(lw.expert_sets[size_t(e_dev)], dev.to(xn, e_dev), dev.to(expert_ids, e_dev),
                    dev.to(expert_w, e_dev), s);
      for (int e = 0; e < c.num_local_experts; ++e)
        if (plan.expert[size_t(l)][size_t(e)] == e_dev) owner[size_t(e)] = int(slots.size());
      slots.push_back(dev.to(s, d));
    }
    std::vector<const Tensor*> slot_ptrs;
    for (const Tensor& s : slots) slot_ptrs.push_back(&s);
    B.moe_combine(slot_ptrs, owner, expert_ids, tmp);
    B.add(x, tmp, x);
    end_layer(l, B);
  }
  const auto t_head = clock::now();

  if (cur != plan.head) x = dev.to(x, plan.head);
  Backend& H = dev.at(plan.head);
  Tensor& xn = scratch(plan.head, DType::F32, {n, hidden}, "x normed");
  H.rms_norm(x, W.final_norm, eps, xn);
  if (out.hidden) out.hidden_states.push_back(dev.host<float>(xn));
  const Tensor head_in = out.all_logits ? xn : xn.slice_rows(n - 1, 1);
  Tensor& logits = scratch(plan.head, DType::F32, {head_in.rows(), vocab}, "logits");
  H.linear(*W.lm_head, head_in, logits);
  out.logits = dev.host<float>(logits);
  impl->tokens.insert(impl->tokens.end(), tokens.begin(), tokens.end());
  out.head_ms = head_ms + ms_between(t_head, clock::now());
}

}  // namespace mixq
