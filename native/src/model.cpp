// Model::load: config.json + mapped safetensors → validated ModelWeights (Linear objects over the
// mapping; nothing but the norm vectors is converted).
#include "model.h"

#include <sstream>

#include "error.h"
#include "linear_awq.h"
#include "linear_dense.h"
#include "safetensors.h"
#include "thread_pool.h"

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

  std::vector<float> norm(const std::string& name) const {
    const TensorView& t = tensor(name, {cfg.hidden_size});
    std::vector<float> v(size_t(cfg.hidden_size));
    const auto* p16 = static_cast<const uint16_t*>(t.data);
    for (int i = 0; i < cfg.hidden_size; ++i) {
      switch (t.dtype) {
        case DType::BF16: v[i] = bf16_to_f32(p16[i]); break;
        case DType::F16: v[i] = f16_to_f32(p16[i]); break;
        case DType::F32: v[i] = static_cast<const float*>(t.data)[i]; break;
        default: throw Error(t.file + ": tensor " + name + " has unsupported dtype " + dtype_name(t.dtype));
      }
    }
    return v;
  }

  // prefix.weight [out, in] dense, or prefix.{qweight,qzeros,scales} AWQ.
  std::unique_ptr<Linear> linear(const std::string& prefix, int64_t out, int64_t in) const {
    if (lookup(prefix + ".weight") || !lookup(prefix + ".qweight")) {
      return make_dense_linear(tensor(prefix + ".weight", {out, in}));
    }
    if (!cfg.quant.enabled) {
      throw Error("tensor " + prefix + ".qweight found in " + source +
                  " but config.json has no quantization_config");
    }
    // Method, version and bits first (for callers other than Model::load): the shapes below assume 4-bit GEMM.
    validate_awq_quant_config(cfg.quant, source);
    const int64_t pack = 32 / cfg.quant.bits;  // values per int32
    const int64_t group = cfg.quant.group_size == -1 ? in : cfg.quant.group_size;  // -1: one group over `in`
    if (group <= 0 || in % group != 0) {
      throw Error("tensor " + prefix + ".qweight: group size " + std::to_string(group) + " does not divide in_features " +
                  std::to_string(in) + " (" + source + ")");
    }
    const int64_t groups = in / group;
    const TensorView& qw = tensor(prefix + ".qweight", {in, out / pack});
    const TensorView& qz = tensor(prefix + ".qzeros", {groups, out / pack});
    const TensorView& sc = tensor(prefix + ".scales", {groups, out});
    auto l = make_awq_linear(qw, qz, sc, cfg.quant);
    if (l->name.empty()) l->name = prefix;
    return l;
  }
};

}  // namespace

void ModelWeights::embed_row(int32_t token, float* dst) const {
  const int64_t vocab = embed.shape[0], hidden = embed.shape[1];
  if (token < 0 || token >= vocab) {
    throw Error("token id " + std::to_string(token) + " is out of range (vocab size " + std::to_string(vocab) + ")");
  }
  const size_t off = size_t(token) * size_t(hidden);
  switch (embed.dtype) {
    case DType::BF16: {
      const auto* p = static_cast<const uint16_t*>(embed.data) + off;
      for (int64_t i = 0; i < hidden; ++i) dst[i] = bf16_to_f32(p[i]);
      break;
    }
    case DType::F16: {
      const auto* p = static_cast<const uint16_t*>(embed.data) + off;
      for (int64_t i = 0; i < hidden; ++i) dst[i] = f16_to_f32(p[i]);
      break;
    }
    default: {
      const float* p = static_cast<const float*>(embed.data) + off;
      for (int64_t i = 0; i < hidden; ++i) dst[i] = p[i];
    }
  }
}

size_t ModelWeights::decode_bytes_per_token(int top_k) const {
  size_t bytes = lm_head->weight_bytes();
  for (const LayerWeights& l : layers) {
    bytes += l.q->weight_bytes() + l.k->weight_bytes() + l.v->weight_bytes() + l.o->weight_bytes();
    bytes += l.gate->weight_bytes();
    // Experts differ in size only across quantization formats: count the average expert.
    size_t experts = 0;
    for (const ExpertWeights& e : l.experts) experts += e.w1->weight_bytes() + e.w2->weight_bytes() + e.w3->weight_bytes();
    bytes += experts / l.experts.size() * size_t(top_k);
  }
  return bytes;
}

size_t ModelWeights::total_bytes() const {
  size_t bytes = embed.nbytes + lm_head->weight_bytes();
  for (const LayerWeights& l : layers) {
    bytes += l.q->weight_bytes() + l.k->weight_bytes() + l.v->weight_bytes() + l.o->weight_bytes();
    bytes += l.gate->weight_bytes();
    for (const ExpertWeights& e : l.experts) bytes += e.w1->weight_bytes() + e.w2->weight_bytes() + e.w3->weight_bytes();
  }
  if (lm_head->weight_bytes() && embed.data && lm_head->name == "model.embed_tokens") bytes -= embed.nbytes;
  return bytes;
}

ModelWeights build_model_weights(const ModelConfig& cfg, const TensorLookup& lookup, const std::string& source) {
  Builder b{cfg, lookup, source};
  ModelWeights w;
  const int64_t hidden = cfg.hidden_size, inter = cfg.intermediate_size, hd = cfg.head_dim;
  const int64_t q_dim = int64_t(cfg.num_attention_heads) * hd, kv_dim = int64_t(cfg.num_key_value_heads) * hd;
  w.embed = b.tensor("model.embed_tokens.weight", {cfg.vocab_size, hidden});
  if (w.embed.dtype != DType::BF16 && w.embed.dtype != DType::F16 && w.embed.dtype != DType::F32) {
    throw Error(w.embed.file + ": tensor model.embed_tokens.weight has unsupported dtype " + dtype_name(w.embed.dtype));
  }
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights L;
    L.attn_norm = b.norm(p + "input_layernorm.weight");
    L.q = b.linear(p + "self_attn.q_proj", q_dim, hidden);
    L.k = b.linear(p + "self_attn.k_proj", kv_dim, hidden);
    L.v = b.linear(p + "self_attn.v_proj", kv_dim, hidden);
    L.o = b.linear(p + "self_attn.o_proj", hidden, q_dim);
    L.post_attn_norm = b.norm(p + "post_attention_layernorm.weight");
    L.gate = b.linear(p + "block_sparse_moe.gate", cfg.num_local_experts, hidden);
    for (int e = 0; e < cfg.num_local_experts; ++e) {
      const std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      ExpertWeights E;
      E.w1 = b.linear(ep + "w1", inter, hidden);
      E.w2 = b.linear(ep + "w2", hidden, inter);
      E.w3 = b.linear(ep + "w3", inter, hidden);
      L.experts.push_back(std::move(E));
    }
    w.layers.push_back(std::move(L));
  }
  w.final_norm = b.norm("model.norm.weight");
  if (cfg.tie_word_embeddings && !lookup("lm_head.weight") && !lookup("lm_head.qweight")) {
    w.lm_head = make_dense_linear(w.embed);
  } else {
    w.lm_head = b.linear("lm_head", cfg.vocab_size, hidden);
  }
  return w;
}

std::shared_ptr<Model> make_model(const ModelConfig& cfg, ModelWeights weights, const EngineOptions& opts,
                                  const std::string& model_dir) {
  if (opts.device != "cpu" && opts.device != "auto" && !opts.device.empty()) {
    throw Error("device \"" + opts.device + "\" is not supported by the CPU engine (use \"cpu\")");
  }
  auto m = std::make_shared<Model>();
  m->model_dir = model_dir;
  m->impl = std::make_unique<Model::Impl>();
  m->impl->config = cfg;
  m->impl->options = opts;
  m->impl->options.device = "cpu";  // what "auto"/"" resolve to while the engine computes on the CPU only
  m->impl->pool = std::make_unique<ThreadPool>(opts.threads);
  m->impl->options.threads = m->impl->pool->size();
  m->impl->weights = std::move(weights);
  return m;
}

std::shared_ptr<Model> Model::load(const std::string& model_dir, const EngineOptions& opts) {
  const ModelConfig cfg = load_model_config(model_dir);
  // Method, version and bits before any tensor: the shapes checked later only mean something for 4-bit GEMM.
  if (cfg.quant.enabled) validate_awq_quant_config(cfg.quant, model_dir + "/config.json");
  std::shared_ptr<WeightStore> store = WeightStore::open(model_dir);
  const std::string source = store->source();
  TensorLookup lookup = [&](const std::string& name) { return store->find(name); };
  ModelWeights w = build_model_weights(cfg, lookup, source);
  w.storage = store;
  return make_model(cfg, std::move(w), opts, model_dir);
}

Model::~Model() = default;
const ModelConfig& Model::config() const { return impl->config; }
const EngineOptions& Model::options() const { return impl->options; }
ThreadPool& Model::pool() const { return *impl->pool; }
const ModelWeights& Model::weights() const { return impl->weights; }
size_t Model::weight_bytes() const { return impl->weights.total_bytes(); }

std::string Model::description() const {
  const ModelConfig& c = impl->config;
  std::ostringstream s;
  s << c.model_type << " " << c.num_hidden_layers << " layers, " << c.num_local_experts << " experts top-"
    << c.num_experts_per_tok << ", " << impl->weights.layers.at(0).experts.at(0).w1->kind() << ", cpu ("
    << dense_isa_name(best_dense_isa()) << ", " << impl->pool->size() << " threads)";
  return s.str();
}

}  // namespace mixq
