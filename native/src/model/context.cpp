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
#include <tuple>

#include "engine.h"
#include "model.h"
#include "ops/rope.h"

namespace mixq {

namespace {
struct Forward;
}

struct Context::Impl {
  std::shared_ptr<Model> model;
  int capacity = 0;
  std::vector<Tensor> k_cache, v_cache;  // [layer]: [capacity, kv_heads*head_dim] on the layer's device, kv_dtype
  std::vector<Tensor> inv_freq;          // [device]: [head_dim/2] f32 (empty where unused)
  std::vector<int32_t> tokens;           // ids held by the cache, position i = tokens[i]
  // Activations kept from one eval to the next: one tensor per (device, role, one-token step or not),
  // reallocated when its shape changes — a decode loop allocates nothing, and a prefill between decode steps
  // leaves the decode tensors (and so a recorded decode step) where they were.
  std::map<std::tuple<int, std::string, bool>, Tensor> workspace;
  bool single_token = false;  // the eval in progress evaluates one token
  uint64_t allocations = 0;   // workspace tensors (re)allocated so far
  Tensor& scratch(Backend& b, int d, DType dt, std::vector<int64_t> shape, const std::string& role) {
    Tensor& t = workspace[{d, role, single_token}];
    if (!t.buffer || t.shape != shape || t.dtype != dt) {
      t = b.empty(dt, std::move(shape), role);
      ++allocations;
    }
    return t;
  }
  // The one-token step recorded as a graph (a plan whose devices are all of one kind that records): replayed while
  // neither the workspace nor the backend's buffers moved since it was recorded (generation).
  std::unique_ptr<Graph> step_graph;
  uint64_t step_graph_generation = 0;
  uint64_t last_generation = ~uint64_t{0};  // after the previous eval: two equal in a row → shapes are settled
  bool recording = true;       // false once recording failed for this context (recording_error says why)
  std::string recording_error;
  Tensor step_result;           // the recorded step's logits [1, vocab] (or next token [1]) on the head's device
  bool step_next_token_only = false;
  const Tensor& step(const Forward& f, Backend& origin, const std::vector<Backend*>& joined);
  void replay(Backend& origin, const std::vector<Backend*>& joined);
  uint64_t generation() const {
    uint64_t g = allocations;
    for (const auto& b : model->impl->backends) g += b->generation();
    return g;
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
    impl->k_cache.push_back(B.empty(B.kv_dtype(), {capacity, kv_dim}, "layer " + std::to_string(l) + " k_cache"));
    impl->v_cache.push_back(B.empty(B.kv_dtype(), {capacity, kv_dim}, "layer " + std::to_string(l) + " v_cache"));
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
std::string Context::step_mode() const {
  if (impl->step_graph) return "graph";
  return impl->recording ? "ops" : "ops (recording failed: " + impl->recording_error + ")";
}
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
  Context::Impl& ctx;
  Backend& at(int d) const { return *m.backends[size_t(d)]; }
  int index_of(const Tensor& t) const {
    for (size_t i = 0; i < m.backends.size(); ++i)
      if (m.backends[i]->device() == t.device()) return int(i);
    throw Error("tensor " + t.name + " lives on " + t.device().str() + ", which this model does not use");
  }
  // `t` on device `d`: itself when already there, else a copy ordered after t's producer, into a workspace tensor
  // of (d, t's name, source device) — the same buffer every step, so a recorded step's copies stay valid.
  Tensor to(const Tensor& t, int d) const {
    const int s = index_of(t);
    if (s == d) return t;
    Tensor out = ctx.scratch(at(d), d, t.dtype, t.shape, t.name + " from " + at(s).device().str());
    out.name = t.name;
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

// One forward pass over the op set, from the uploaded ids to the logits tensor on the head's device (or, with
// next_token_only, the chosen token [1] i32).
struct Forward {
  Context::Impl& ctx;
  Model::Impl& m;
  const Devices& dev;
  EvalCapture& out;
  int64_t n = 0, n_past = 0;
  const Tensor* ids = nullptr;                 // [n] i32 on the embedding's device
  std::vector<const Tensor*> positions;        // [device]: [n] i32 where a layer runs, else null

  Tensor& scratch(int d, DType dt, std::vector<int64_t> shape, const char* role) const {
    return ctx.scratch(dev.at(d), d, dt, std::move(shape), role);
  }
  const Tensor& run() const;
  void layer(int l, Tensor& x) const;
  void experts(int l, const Tensor& xn, Tensor& tmp) const;
};

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

const Tensor& Forward::run() const {
  const ModelConfig& c = m.config;
  const Plan& plan = m.plan;
  const int64_t hidden = c.hidden_size, vocab = c.vocab_size;
  const auto t_start = Clock::now();
  int cur = plan.embed;
  Tensor x = scratch(cur, DType::F32, {n, hidden}, "x");
  dev.at(cur).embed(m.weights.embed, *ids, x);
  if (out.hidden) out.hidden_states.push_back(dev.host<float>(x));
  auto t_layer = Clock::now();
  const double head_ms = ms_between(t_start, t_layer);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int d = plan.layer[size_t(l)];
    if (d != cur) x = dev.to(x, d);  // a layer-split boundary
    cur = d;
    layer(l, x);
    if (out.hidden && l + 1 < c.num_hidden_layers) out.hidden_states.push_back(dev.host<float>(x));
    if (out.timing) {
      dev.at(d).synchronize();
      const auto now = Clock::now();
      out.layer_ms[size_t(l)] = ms_between(t_layer, now);
      t_layer = now;
    }
  }
  const auto t_head = Clock::now();
  if (cur != plan.head) x = dev.to(x, plan.head);
  Backend& H = dev.at(plan.head);
  Tensor& xn = scratch(plan.head, DType::F32, {n, hidden}, "x normed");
  H.rms_norm(x, m.weights.final_norm, float(c.rms_norm_eps), xn);
  if (out.hidden) out.hidden_states.push_back(dev.host<float>(xn));
  const Tensor head_in = out.all_logits ? xn : xn.slice_rows(n - 1, 1);
  Tensor& logits = scratch(plan.head, DType::F32, {head_in.rows(), vocab}, "logits");
  H.linear(*m.weights.lm_head, head_in, logits);
  if (out.next_token_only) {
    Tensor& next = scratch(plan.head, DType::I32, {1}, "next token");
    H.argmax(logits.slice_rows(logits.rows() - 1, 1), next);
    out.head_ms = head_ms + ms_between(t_head, Clock::now());
    return next;
  }
  out.head_ms = head_ms + ms_between(t_head, Clock::now());
  return logits;
}

// x[n, hidden] += attention block; x += MoE block (or dense MLP) — on the layer's device (experts wherever they live).
void Forward::layer(int l, Tensor& x) const {
  const ModelConfig& c = m.config;
  const LayerWeights& lw = m.weights.layers[size_t(l)];
  const int d = m.plan.layer[size_t(l)];
  Backend& B = dev.at(d);
  const int64_t hidden = c.hidden_size, hd = c.head_dim;
  const int64_t q_dim = int64_t(c.num_attention_heads) * hd, kv_dim = int64_t(c.num_key_value_heads) * hd;
  const AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, int(hd), c.sliding_window};
  const float eps = float(c.rms_norm_eps);
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
  B.rope(q, *positions[size_t(d)], ctx.inv_freq[size_t(d)], c.num_attention_heads, int(hd));
  B.rope(k, *positions[size_t(d)], ctx.inv_freq[size_t(d)], c.num_key_value_heads, int(hd));
  B.attention(q, k, v, ctx.k_cache[size_t(l)], ctx.v_cache[size_t(l)], *positions[size_t(d)], n_past, shape, att);
  B.linear(*lw.o, att, tmp);
  B.add(x, tmp, x);
  B.rms_norm(x, lw.post_attn_norm, eps, xn);
  if (lw.dense()) {
    const int64_t di = lw.mlp.w1->out_features;
    dense_mlp(B, lw.mlp, xn, scratch(d, DType::F32, {n, di}, "mlp gate"), scratch(d, DType::F32, {n, di}, "mlp up"), tmp);
  } else {
    experts(l, xn, tmp);
  }
  B.add(x, tmp, x);
}

// tmp[n, hidden] = Σ_j w_j · expert_{ids_j}(xn): router on the layer's device, experts on the devices holding them,
// their slots brought back and combined in ascending expert order.
void Forward::experts(int l, const Tensor& xn, Tensor& tmp) const {
  const ModelConfig& c = m.config;
  const LayerWeights& lw = m.weights.layers[size_t(l)];
  const Plan& plan = m.plan;
  const int d = plan.layer[size_t(l)], K = c.num_experts_per_tok;
  Backend& B = dev.at(d);
  Tensor& logits = scratch(d, DType::F32, {n, c.num_local_experts}, "router logits");
  Tensor& expert_ids = scratch(d, DType::I32, {n, K}, "expert ids");
  Tensor& expert_w = scratch(d, DType::F32, {n, K}, "expert weights");
  B.linear(*lw.gate, xn, logits);
  B.router(logits, K, c.norm_topk_prob, expert_ids, expert_w);
  if (out.router_logits) {
    out.router[size_t(l)] = dev.host<float>(logits);
    out.topk_experts[size_t(l)] = dev.host<int32_t>(expert_ids);
  }
  std::vector<Tensor> slots;
  std::vector<int> owner(size_t(c.num_local_experts), 0);
  for (int e_dev : plan.expert_devices(l)) {
    Backend& E = dev.at(e_dev);
    Tensor& s = scratch(e_dev, DType::F32, {n * K, c.hidden_size}, "expert slots");
    E.moe_experts(lw.expert_sets[size_t(e_dev)], dev.to(xn, e_dev), dev.to(expert_ids, e_dev),
                  dev.to(expert_w, e_dev), s);
    for (int e = 0; e < c.num_local_experts; ++e)
      if (plan.expert[size_t(l)][size_t(e)] == e_dev) owner[size_t(e)] = int(slots.size());
    slots.push_back(dev.to(s, d));
  }
  std::vector<const Tensor*> slot_ptrs;
  for (const Tensor& s : slots) slot_ptrs.push_back(&s);
  B.moe_combine(slot_ptrs, owner, expert_ids, tmp);
}

// The devices the plan uses (indices into the model's backends), the embedding's first: it uploads the inputs,
// so a recorded step starts there.
std::vector<int> plan_devices(const Plan& plan) {
  std::vector<int> ds{plan.embed};
  const auto add = [&](int d) {
    if (std::find(ds.begin(), ds.end(), d) == ds.end()) ds.push_back(d);
  };
  for (size_t l = 0; l < plan.layer.size(); ++l) {
    add(plan.layer[l]);
    for (int e : plan.expert[l]) add(e);
  }
  add(plan.head);
  return ds;
}

}  // namespace

// A one-token step: replay the recorded graph when nothing moved since it was recorded; record it when the
// previous eval left the buffers as they are now (shapes settled); else run the ops one by one. `origin` (the
// embedding's backend) records; the `joined` backends (the plan's other devices, of origin's kind) join its
// recording through the events of Devices::to and are joined back before it ends.
const Tensor& Context::Impl::step(const Forward& f, Backend& origin, const std::vector<Backend*>& joined) {
  const uint64_t g = generation();
  if (step_graph && step_graph_generation == g && step_next_token_only == f.out.next_token_only) {
    replay(origin, joined);
    return step_result;
  }
  step_graph.reset();
  if (g != last_generation || !recording || !origin.begin_capture()) return f.run();
  try {
    const Tensor& result = f.run();
    step_graph = origin.end_capture(joined);
    step_result = result;
    step_next_token_only = f.out.next_token_only;
    step_graph_generation = generation();
  } catch (const std::exception& e) {  // an op that cannot be recorded: run this context's steps one by one
    origin.cancel_capture(joined);
    step_graph.reset();
    recording = false;
    recording_error = e.what();
    return f.run();
  }
  replay(origin, joined);
  return step_result;
}

// The graph runs on origin's stream: after whatever the joined devices still have queued, and before anything
// they run next (the result is read on the head's device).
void Context::Impl::replay(Backend& origin, const std::vector<Backend*>& joined) {
  for (Backend* b : joined) origin.wait(*b->record());
  step_graph->replay();
  if (joined.empty()) return;
  const auto done = origin.record();
  for (Backend* b : joined) b->wait(*done);
}

void Context::eval(const std::vector<int32_t>& tokens, EvalCapture& out) {
  Model::Impl& m = *impl->model->impl;
  const ModelConfig& c = m.config;
  const Plan& plan = m.plan;
  const Devices dev{m, *impl};
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
  const int L = c.num_hidden_layers;
  out.layer_ms.assign(out.timing ? size_t(L) : 0, 0.0);
  out.logits.clear();
  out.next_token = -1;
  out.hidden_states.clear();
  out.router.clear();
  out.topk_experts.clear();
  if (out.router_logits) {
    out.router.resize(size_t(L));
    out.topk_experts.resize(size_t(L));
  }
  impl->single_token = n == 1;

  // Inputs, uploaded before any op runs (a recorded step reads them where they are): token ids [n] i32 on the
  // embedding's device, positions [n] i32 on every device that runs a layer.
  Forward f{*impl, m, dev, out, n, n_past, nullptr, std::vector<const Tensor*>(m.backends.size(), nullptr)};
  Tensor& ids = f.scratch(plan.embed, DType::I32, {n}, "token ids");
  dev.at(plan.embed).from_host(tokens.data(), tokens.size() * sizeof(int32_t), ids);
  f.ids = &ids;
  std::vector<int32_t> pos_host(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) pos_host[size_t(t)] = int32_t(n_past + t);
  for (int d : plan.layer) {
    if (f.positions[size_t(d)]) continue;
    Tensor& p = f.scratch(d, DType::I32, {n}, "positions");
    dev.at(d).from_host(pos_host.data(), pos_host.size() * sizeof(int32_t), p);
    f.positions[size_t(d)] = &p;
  }

  // One-token steps are recorded when every device of the plan is of the embedding device's kind (one backend
  // kind joins its own recordings only; CPU devices never record) and nothing asks for per-op results or timings.
  const std::vector<int> used = plan_devices(plan);
  Backend& origin = dev.at(used[0]);
  std::vector<Backend*> joined;
  bool recordable = n == 1 && !out.hidden && !out.router_logits && !out.timing;
  for (int d : used) {
    recordable &= dev.at(d).device().kind == origin.device().kind && !dev.at(d).profiler().enabled();
    if (d != used[0]) joined.push_back(&dev.at(d));
  }
  const Tensor& result = recordable ? impl->step(f, origin, joined) : f.run();
  if (out.next_token_only) {
    out.next_token = dev.host<int32_t>(result)[0];
  } else {
    out.logits = dev.host<float>(result);
  }
  impl->last_generation = impl->generation();
  impl->tokens.insert(impl->tokens.end(), tokens.begin(), tokens.end());
}

}  // namespace mixq
