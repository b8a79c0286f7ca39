// Model::load and make_model: config.json + the checkpoint's tensors → a placement plan → every weight prepared on
// its device by that device's backend (the CPU wraps the mapping; nothing but the norm vectors is converted).
#include "model.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"
#include "core/safetensors.h"
#include "ops/embed.h"

namespace mixq {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  TensorView t;
  t.shape = s;
  return t.shape_str();
}

struct Builder {
  const ModelConfig& cfg;
  const TensorLookup& lookup;
  const std::string& source;

  const TensorView& tensor(const std::string& name, const std::vector<int64_t>& shape) const {
    const TensorView* t = lookup(name);
    if (!t) throw Error("tensor " + name + " not found in " + source);
    if (t->shape != shape) {
      throw Error(t->file + ": tensor " + name + " has shape " + t->shape_str() + " but config.json implies " +
                  shape_str(shape));
    }
    return *t;
  }

  const TensorView& norm(const std::string& name, int64_t width = 0) const {
    const TensorView& t = tensor(name, {width ? width : cfg.hidden_size});
    if (t.dtype != DType::BF16 && t.dtype != DType::F16 && t.dtype != DType::F32) {
      throw Error(t.file + ": tensor " + name + " has unsupported dtype " + dtype_name(t.dtype));
    }
    return t;
  }

  // prefix.weight [out, in] dense, or prefix.{qweight,qzeros,scales} AWQ.
  LinearSource linear(const std::string& prefix, int64_t out, int64_t in) const {
    LinearSource s;
    s.name = prefix;
    if (lookup(prefix + ".weight") || !lookup(prefix + ".qweight")) {
      s.weight = &tensor(prefix + ".weight", {out, in});
      return s;
    }
    if (!cfg.quant.enabled) {
      throw Error("tensor " + prefix + ".qweight found in " + source + " but config.json has no quantization_config");
    }
    // Method, version and bits first (for callers other than Model::load): the shapes below assume 4-bit GEMM.
    validate_awq_quant_config(cfg.quant, source);
    const int64_t pack = 32 / cfg.quant.bits;  // values per int32
    const int64_t group = cfg.quant.group_size == -1 ? in : cfg.quant.group_size;  // -1: one group over `in`
    if (group <= 0 || in % group != 0) {
      throw Error("tensor " + prefix + ".qweight: group size " + std::to_string(group) +
                  " does not divide in_features " + std::to_string(in) + " (" + source + ")");
    }
    const int64_t groups = in / group;
    s.qweight = &tensor(prefix + ".qweight", {in, out / pack});
    s.qzeros = &tensor(prefix + ".qzeros", {groups, out / pack});
    s.scales = &tensor(prefix + ".scales", {groups, out});
    s.quant = cfg.quant;
    return s;
  }

  const TensorView& embedding() const {
    const TensorView& e = tensor("model.embed_tokens.weight", {cfg.vocab_size, cfg.hidden_size});
    if (e.dtype != DType::BF16 && e.dtype != DType::F16 && e.dtype != DType::F32) {
      throw Error(e.file + ": tensor model.embed_tokens.weight has unsupported dtype " + dtype_name(e.dtype));
    }
    return e;
  }
  bool tied_head() const {
    return cfg.tie_word_embeddings && !lookup("lm_head.weight") && !lookup("lm_head.qweight");
  }
  LinearSource head() const {
    if (!tied_head()) return linear("lm_head", cfg.vocab_size, cfg.hidden_size);
    LinearSource s;
    s.name = "model.embed_tokens";
    s.weight = &embedding();
    return s;
  }
  std::string layer_prefix(int l) const { return "model.layers." + std::to_string(l) + "."; }
  std::string moe_prefix(int l) const { return layer_prefix(l) + cfg.names().moe + "."; }
  std::string expert_prefix(int l, int e) const { return moe_prefix(l) + "experts." + std::to_string(e) + "."; }
  // gate/down/up of an expert (prefix = expert_prefix) or of a dense MLP (prefix = "model.layers.L.mlp.").
  LinearSource w1(const std::string& prefix, int64_t inter, bool dense = false) const {
    return linear(prefix + (dense ? "gate_proj" : cfg.names().w1), inter, cfg.hidden_size);
  }
  LinearSource w2(const std::string& prefix, int64_t inter, bool dense = false) const {
    return linear(prefix + (dense ? "down_proj" : cfg.names().w2), cfg.hidden_size, inter);
  }
  LinearSource w3(const std::string& prefix, int64_t inter, bool dense = false) const {
    return linear(prefix + (dense ? "up_proj" : cfg.names().w3), inter, cfg.hidden_size);
  }
  ExpertWeights mlp(Backend& B, const std::string& prefix, int64_t inter, bool dense) const {
    ExpertWeights E;
    E.w1 = B.prepare_linear(w1(prefix, inter, dense));
    E.w2 = B.prepare_linear(w2(prefix, inter, dense));
    E.w3 = B.prepare_linear(w3(prefix, inter, dense));
    return E;
  }
};

size_t mlp_bytes(const ExpertWeights& e) { return e.w1->weight_bytes() + e.w2->weight_bytes() + e.w3->weight_bytes(); }

size_t source_bytes(const LinearSource& s) {
  return s.weight ? s.weight->nbytes : s.qweight->nbytes + s.qzeros->nbytes + s.scales->nbytes;
}

std::vector<Device> requested_devices(const EngineOptions& o) {
  std::vector<Device> devs;
  if (!o.devices.empty()) {
    for (const std::string& s : o.devices) {
      const Device d = Device::parse(s);
      for (const Device& prev : devs)
        if (prev == d) throw Error("device " + d.str() + " is listed twice");
      devs.push_back(d);
    }
    return devs;
  }
  if (!o.gpus.empty()) {
    for (int g : o.gpus) devs.push_back(Device{DeviceKind::Cuda, g, 0});
    return devs;
  }
  if (o.device == "auto" || o.device.empty()) {
    // A GPU when a backend that runs the model on one is built in and a GPU is visible, else the CPU.
    for (const Device& d : available_devices())
      if (d.kind == DeviceKind::Cuda) return {d};
    return {Device{}};
  }
  return {Device::parse(o.device)};
}

}  // namespace

void ModelWeights::embed_row(int32_t token, float* dst) const {
  const int64_t vocab = embed_view.shape[0];
  if (token < 0 || token >= vocab) {
    throw Error("token id " + std::to_string(token) + " is out of range (vocab size " + std::to_string(vocab) + ")");
  }
  embed_rows(embed_view.data, embed_view.dtype, vocab, embed_view.shape[1], &token, 1, dst);
}

size_t ModelWeights::decode_bytes_per_token(int top_k) const {
  size_t bytes = lm_head->weight_bytes();
  for (const LayerWeights& l : layers) {
    bytes += l.q->weight_bytes() + l.k->weight_bytes() + l.v->weight_bytes() + l.o->weight_bytes();
    if (l.dense()) {
      bytes += mlp_bytes(l.mlp);
      continue;
    }
    bytes += l.gate->weight_bytes();
    // Experts differ in size only across quantization formats: count the average expert.
    size_t experts = 0;
    for (const ExpertWeights& e : l.experts) experts += mlp_bytes(e);
    bytes += experts / l.experts.size() * size_t(top_k);
  }
  return bytes;
}

size_t ModelWeights::total_bytes() const {
  size_t bytes = embed_view.nbytes + lm_head->weight_bytes();
  for (const LayerWeights& l : layers) {
    bytes += l.q->weight_bytes() + l.k->weight_bytes() + l.v->weight_bytes() + l.o->weight_bytes();
    if (l.dense()) bytes += mlp_bytes(l.mlp);
    else bytes += l.gate->weight_bytes();
    for (const ExpertWeights& e : l.experts) bytes += mlp_bytes(e);
  }
  if (lm_head->name == "model.embed_tokens") bytes -= embed_view.nbytes;
  return bytes;
}

ModelBytes model_bytes(const ModelConfig& cfg, const TensorLookup& lookup, int capacity) {
  Builder b{cfg, lookup, "model"};
  const int64_t hidden = cfg.hidden_size, inter = cfg.intermediate_size, hd = cfg.head_dim;
  const int64_t q_dim = int64_t(cfg.num_attention_heads) * hd, kv_dim = int64_t(cfg.num_key_value_heads) * hd;
  ModelBytes mb;
  mb.embed = b.embedding().nbytes;
  mb.head = size_t(hidden) * 4 + (b.tied_head() ? 0 : source_bytes(b.head()));
  mb.kv_per_layer = 2 * size_t(capacity) * size_t(kv_dim) * sizeof(float);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = b.layer_prefix(l);
    size_t layer = 2 * size_t(hidden) * 4 + source_bytes(b.linear(p + "self_attn.q_proj", q_dim, hidden)) +
                   source_bytes(b.linear(p + "self_attn.k_proj", kv_dim, hidden)) +
                   source_bytes(b.linear(p + "self_attn.v_proj", kv_dim, hidden)) +
                   source_bytes(b.linear(p + "self_attn.o_proj", hidden, q_dim));
    if (cfg.qk_norm) {  // widened to f32 on the device
      b.norm(p + "self_attn.q_norm.weight", hd);
      b.norm(p + "self_attn.k_norm.weight", hd);
      layer += 2 * size_t(hd) * 4;
    }
    std::vector<size_t> ex;
    if (cfg.moe_layer(l)) {
      layer += source_bytes(b.linear(b.moe_prefix(l) + "gate", cfg.num_local_experts, hidden));
      for (int e = 0; e < cfg.num_local_experts; ++e) {
        const std::string ep = b.expert_prefix(l, e);
        ex.push_back(source_bytes(b.w1(ep, inter)) + source_bytes(b.w2(ep, inter)) + source_bytes(b.w3(ep, inter)));
      }
    } else {
      const int64_t di = cfg.dense_intermediate_size;
      layer += source_bytes(b.w1(p + "mlp.", di, true)) + source_bytes(b.w2(p + "mlp.", di, true)) +
               source_bytes(b.w3(p + "mlp.", di, true));
    }
    mb.layer.push_back(layer);
    mb.expert.push_back(std::move(ex));
  }
  return mb;
}

std::shared_ptr<Model> make_model_from(std::unique_ptr<Model::Impl> impl, const std::string& model_dir) {
  auto m = std::make_shared<Model>();
  m->model_dir = model_dir;
  m->impl = std::move(impl);
  return m;
}

std::shared_ptr<Model> make_model(const ModelConfig& cfg, const TensorLookup& lookup,
                                  std::shared_ptr<const void> storage, const EngineOptions& opts,
                                  const std::string& model_dir, const std::string& source) {
  auto impl = std::make_unique<Model::Impl>();
  impl->config = cfg;
  impl->options = opts;
  Builder b{cfg, lookup, source};
  const int64_t hidden = cfg.hidden_size, inter = cfg.intermediate_size, hd = cfg.head_dim;
  const int64_t q_dim = int64_t(cfg.num_attention_heads) * hd, kv_dim = int64_t(cfg.num_key_value_heads) * hd;
  const int capacity = opts.context_length > 0 ? opts.context_length : std::min(cfg.max_position_embeddings, 4096);
  ModelBytes bytes = model_bytes(cfg, lookup, capacity);  // checks every tensor before any is placed

  PlacementRequest req;
  req.devices = requested_devices(opts);
  req.mode = parse_placement_mode(opts.placement.empty() ? "layer" : opts.placement);
  req.split = opts.split;
  BackendOptions bo;
  bo.threads = opts.threads;
  for (const Device& d : req.devices) impl->backends.push_back(make_backend(d, bo));
  size_t kv_elem = 0;  // the KV cache's element size on these devices (f32 on the CPU, f16 on a GPU): the largest
  for (const auto& be : impl->backends) kv_elem = std::max(kv_elem, dtype_size(be->kv_dtype()));
  bytes.kv_per_layer = bytes.kv_per_layer / sizeof(float) * kv_elem;
  if (!opts.device_memory.empty()) {
    req.memory = opts.device_memory;
  } else if (req.devices.size() > 1) {
    for (const auto& be : impl->backends) req.memory.push_back(be->free_memory());
  }
  impl->plan = plan_placement(bytes, req);
  const Plan& plan = impl->plan;
  auto be = [&](int d) -> Backend& { return *impl->backends[size_t(d)]; };

  ModelWeights& w = impl->weights;
  w.storage = storage;
  w.embed_view = b.embedding();
  w.embed = be(plan.embed).upload(w.embed_view, storage);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = b.layer_prefix(l);
    Backend& B = be(plan.layer[size_t(l)]);
    LayerWeights L;
    L.attn_norm = B.upload_f32(b.norm(p + "input_layernorm.weight"));
    L.q = B.prepare_linear(b.linear(p + "self_attn.q_proj", q_dim, hidden));
    L.k = B.prepare_linear(b.linear(p + "self_attn.k_proj", kv_dim, hidden));
    L.v = B.prepare_linear(b.linear(p + "self_attn.v_proj", kv_dim, hidden));
    L.o = B.prepare_linear(b.linear(p + "self_attn.o_proj", hidden, q_dim));
    if (cfg.qk_norm) {
      L.q_norm = B.upload_f32(b.norm(p + "self_attn.q_norm.weight", hd));
      L.k_norm = B.upload_f32(b.norm(p + "self_attn.k_norm.weight", hd));
    }
    L.post_attn_norm = B.upload_f32(b.norm(p + "post_attention_layernorm.weight"));
    if (!cfg.moe_layer(l)) {
      L.mlp = b.mlp(B, p + "mlp.", cfg.dense_intermediate_size, /*dense=*/true);
      w.layers.push_back(std::move(L));
      continue;
    }
    L.gate = B.prepare_linear(b.linear(b.moe_prefix(l) + "gate", cfg.num_local_experts, hidden));
    L.expert_sets.assign(plan.devices.size(), ExpertSet{});
    for (ExpertSet& s : L.expert_sets) s.experts.assign(size_t(cfg.num_local_experts), nullptr);
    L.experts.resize(size_t(cfg.num_local_experts));
    for (int e = 0; e < cfg.num_local_experts; ++e) {
      const int d = plan.expert[size_t(l)][size_t(e)];
      L.experts[size_t(e)] = b.mlp(be(d), b.expert_prefix(l, e), inter, /*dense=*/false);
      L.expert_sets[size_t(d)].experts[size_t(e)] = &L.experts[size_t(e)];
    }
    w.layers.push_back(std::move(L));
  }
  w.final_norm = be(plan.head).upload_f32(b.norm("model.norm.weight"));
  w.lm_head = be(plan.head).prepare_linear(b.head());
  impl->options.device = plan.devices[0].str();
  impl->options.threads = opts.threads;
  return make_model_from(std::move(impl), model_dir);
}

namespace {
// The number after `marker` at the start of name's remainder ("model.layers.12.mlp" → 12), or -1.
int64_t index_after(const std::string& name, size_t at) {
  int64_t v = 0;
  size_t i = at;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && i - at < 10; ++i) v = v * 10 + (name[i] - '0');
  return i > at && i < name.size() && name[i] == '.' ? v : -1;
}
}  // namespace

void check_checkpoint_matches_config(const ModelConfig& cfg, const std::vector<std::string>& names,
                                     const std::string& config_path, const std::string& source) {
  static const std::string kLayers = "model.layers.";
  const std::string kExperts = "." + cfg.names().moe + ".experts.";
  for (const std::string& n : names) {
    if (n.compare(0, kLayers.size(), kLayers) != 0) continue;
    const int64_t layer = index_after(n, kLayers.size());
    if (layer >= cfg.num_hidden_layers) {
      throw Error(config_path + ": num_hidden_layers is " + std::to_string(cfg.num_hidden_layers) + " but " + source +
                  " holds tensor " + n + " of layer " + std::to_string(layer) +
                  " (config.json and the checkpoint disagree)");
    }
    const size_t e = n.find(kExperts);
    if (e == std::string::npos) continue;
    const int64_t expert = index_after(n, e + kExperts.size());
    if (expert >= cfg.num_local_experts) {
      const char* field = cfg.model_type == "qwen3_moe" ? "num_experts" : "num_local_experts";
      throw Error(config_path + ": " + field + " is " + std::to_string(cfg.num_local_experts) + " but " + source +
                  " holds tensor " + n + " of expert " + std::to_string(expert) +
                  " (config.json and the checkpoint disagree)");
    }
  }
}

std::shared_ptr<Model> Model::load(const std::string& model_dir, const EngineOptions& opts) {
  const ModelConfig cfg = load_model_config(model_dir);
  // Method, version and bits before any tensor: the shapes checked later only mean something for 4-bit GEMM.
  if (cfg.quant.enabled) validate_awq_quant_config(cfg.quant, model_dir + "/config.json");
  std::shared_ptr<WeightStore> store = WeightStore::open(model_dir);
  check_checkpoint_matches_config(cfg, store->names(), model_dir + "/config.json", store->source());
  TensorLookup lookup = [&](const std::string& name) { return store->find(name); };
  return make_model(cfg, lookup, store, opts, model_dir, store->source());
}

Model::~Model() = default;
const ModelConfig& Model::config() const { return impl->config; }
const EngineOptions& Model::options() const { return impl->options; }
const ModelWeights& Model::weights() const { return impl->weights; }
const Plan& Model::placement() const { return impl->plan; }
size_t Model::weight_bytes() const { return impl->weights.total_bytes(); }

int Model::threads() const {
  int n = 0;  // the CPU backends share one pool
  for (const auto& be : impl->backends) n = std::max(n, be->threads());
  return n;
}

std::vector<DeviceUsage> Model::device_usage() const {
  std::vector<DeviceUsage> out;
  for (size_t i = 0; i < impl->backends.size(); ++i) {
    const Backend& be = *impl->backends[i];
    out.push_back({be.device().str(), be.name(), impl->plan.bytes[i], be.arena_bytes(), be.peak_arena_bytes()});
  }
  return out;
}

std::string Model::description() const {
  const ModelConfig& c = impl->config;
  std::ostringstream s;
  const LayerWeights& l0 = impl->weights.layers.at(0);
  const Linear& ffn = l0.dense() ? *l0.mlp.w1 : *l0.experts.at(0).w1;
  s << c.model_type << " " << c.num_hidden_layers << " layers, " << c.num_local_experts << " experts top-"
    << c.num_experts_per_tok << ", " << ffn.kind() << ", ";
  for (size_t i = 0; i < impl->backends.size(); ++i) s << (i ? " + " : "") << impl->backends[i]->name();
  if (impl->backends.size() > 1) s << ", " << placement_mode_name(impl->plan.mode) << " placement";
  return s.str();
}

std::vector<float> host_floats(const Model& m, const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  for (const auto& be : m.impl->backends) {
    if (be->device() == t.device()) {
      be->to_host(t, v.data(), v.size() * sizeof(float));
      return v;
    }
  }
  throw Error("tensor " + t.name + " lives on " + t.device().str() + ", which this model does not use");
}

}  // namespace mixq
