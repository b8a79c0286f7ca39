// The Qwen3-MoE family beyond the golden test (test_reference): config.json parsing (explicit head_dim, num_experts,
// moe_intermediate_size, norm_topk_prob, decoder_sparse_step / mlp_only_layers, and the variants refused by name),
// dense-MLP layers (the fixture has none: built from its tensors with an edited config and checked against an
// equivalent MoE layer), the same bits under layer and expert placement over virtual CPU devices, tied lm_head and
// an embedding with more rows than the tokenizer has ids. Needs only models/mixq-tiny-qwen3moe.
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>

#include "engine.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

// config.json of the fixture with `from` replaced by `to` (and `from2` by `to2`), loaded from a temp dir.
ModelConfig edited_config(const std::string& from, const std::string& to, const std::string& from2 = "",
                          const std::string& to2 = "") {
  std::string text = read_file(qwen_model_dir() + "/config.json");
  for (const auto& [f, t] : {std::make_pair(from, to), std::make_pair(from2, to2)}) {
    if (f.empty()) continue;
    const size_t at = text.find(f);
    if (at == std::string::npos) throw std::runtime_error("test: config.json lacks " + f);
    text.replace(at, f.size(), t);
  }
  const std::string dir = make_temp_dir("qwen-config");
  write_file(dir + "/config.json", text);
  struct Cleanup {
    std::string d;
    ~Cleanup() { remove_tree(d); }
  } cleanup{dir};
  return load_model_config(dir);
}

void check_config() {
  const ModelConfig c = load_model_config(qwen_model_dir());
  check(c.model_type == "qwen3_moe" && c.head_dim == 64 && c.num_attention_heads * c.head_dim == 256 &&
            c.hidden_size == 128 && c.num_local_experts == 48 && c.num_experts_per_tok == 8 &&
            c.intermediate_size == 128 && c.norm_topk_prob && c.qk_norm && c.dense_intermediate_size == 0 &&
            c.vocab_size == 8256 && c.rms_norm_eps == 1e-6 && c.rope_theta == 1e6 && !c.tie_word_embeddings,
        "fixture config: head_dim 64 (q width 256 != hidden 128), 48 experts top-8 of width 128, norm_topk_prob, "
        "q/k norms, every layer MoE, vocab 8256");
  check(c.names().moe == "mlp" && c.names().w1 == "gate_proj" && c.names().w2 == "down_proj",
        "qwen3_moe tensor names: mlp.gate, mlp.experts.E.{gate,up,down}_proj");
  const ModelConfig only1 = edited_config("\"mlp_only_layers\": []", "\"mlp_only_layers\": [1]");
  check(only1.moe_layer(0) && !only1.moe_layer(1) && only1.moe_layer(2) && only1.dense_intermediate_size == 384,
        "mlp_only_layers [1]: layer 1 is a dense MLP of intermediate_size 384, layers 0 and 2 MoE");
  const ModelConfig step2 = edited_config("\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2");
  check(!step2.moe_layer(0) && step2.moe_layer(1) && !step2.moe_layer(2),
        "decoder_sparse_step 2: layer 1 MoE, layers 0 and 2 dense ((l+1) % step == 0)");
  check(!edited_config("\"norm_topk_prob\": true", "\"norm_topk_prob\": false").norm_topk_prob,
        "norm_topk_prob false is read");

  const std::vector<std::pair<std::pair<std::string, std::string>, std::vector<std::string>>> bad = {
      {{"\"use_sliding_window\": false", "\"use_sliding_window\": true"}, {"config.json", "use_sliding_window", "not supported"}},
      {{"\"decoder_sparse_step\": 1,", "\"decoder_sparse_step\": 1, \"shared_expert_intermediate_size\": 512,"},
       {"config.json", "shared_expert_intermediate_size", "shared experts"}},
      {{"\"decoder_sparse_step\": 1,", "\"decoder_sparse_step\": 1, \"layer_types\": [\"full_attention\", "
                                       "\"sliding_attention\", \"full_attention\"],"},
       {"config.json", "layer_types", "sliding"}},
      {{"\"head_dim\": 64,", ""}, {"config.json", "head_dim", "missing"}},
      {{"\"num_experts\": 48,", ""}, {"config.json", "num_experts", "missing", "qwen3_moe"}},
      {{"\"moe_intermediate_size\": 128,", ""}, {"config.json", "moe_intermediate_size", "missing"}},
      {{"\"mlp_only_layers\": []", "\"mlp_only_layers\": [3]"}, {"config.json", "mlp_only_layers", "layer index"}},
      {{"\"attention_bias\": false", "\"attention_bias\": true"}, {"config.json", "attention_bias", "not supported"}},
      {{"\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}"}, {"config.json", "rope_scaling"}},
  };
  for (const auto& [edit, needles] : bad) {
    check_throws([&] { edited_config(edit.first, edit.second); }, needles, "refused: " + edit.second.substr(0, 60));
  }
  // A dense layer needs intermediate_size; without dense layers it is not read.
  check_throws([&] { edited_config("\"mlp_only_layers\": []", "\"mlp_only_layers\": [0]", "\"intermediate_size\": 384,", ""); },
               {"config.json", "intermediate_size", "missing"}, "a dense layer without intermediate_size is refused");
  check(edited_config("\"intermediate_size\": 384,", "").dense_intermediate_size == 0,
        "intermediate_size is not needed when every layer is MoE");
}

// Weights of the fixture with renamed / synthetic tensors, for model variants.
struct Variant {
  std::shared_ptr<WeightStore> store = WeightStore::open(qwen_model_dir());
  std::map<std::string, std::string> alias;   // name asked → fixture tensor
  std::map<std::string, TensorView> extra;    // synthetic tensors
  std::vector<uint16_t> zeros;                // their bf16 storage (all zero)
  std::vector<std::string> hidden;            // name prefixes to hide

  TensorLookup lookup() {
    return [this](const std::string& n) -> const TensorView* {
      for (const std::string& h : hidden)
        if (n.rfind(h, 0) == 0) return nullptr;
      if (auto e = extra.find(n); e != extra.end()) return &e->second;
      auto a = alias.find(n);
      return store->find(a == alias.end() ? n : a->second);
    };
  }
  void add_zero_bf16(const std::string& name, std::vector<int64_t> shape) {
    TensorView t;
    t.name = name;
    t.file = "synthetic";
    t.dtype = DType::BF16;
    t.shape = shape;
    zeros.assign(size_t(t.numel()), 0);
    t.data = zeros.data();
    t.nbytes = zeros.size() * 2;
    extra[name] = t;
  }
  std::shared_ptr<Model> make(const ModelConfig& cfg, const EngineOptions& eo = {}) {
    return make_model(cfg, lookup(), store, eo, qwen_model_dir(), "qwen fixture variant");
  }
};

std::vector<float> trace(const std::shared_ptr<Model>& m) {
  const std::vector<int32_t> prompt{563, 1203, 77, 4093, 12, 9, 810, 2711, 301, 8250, 64, 5};  // 8250: a padding row
  Context ctx(m, 64);
  EvalCapture cap;
  cap.all_logits = true;
  ctx.eval(prompt, cap);
  std::vector<float> all = cap.logits;
  for (int32_t t : {17, 4000, 222}) {
    ctx.eval({t}, cap);
    all.insert(all.end(), cap.logits.begin(), cap.logits.end());
  }
  return all;
}

void check_dense_layers() {
  const ModelConfig base = load_model_config(qwen_model_dir());
  const std::string l1 = "model.layers.1.mlp.";
  // A: layer 1 a dense MLP made of expert 0's weights.
  Variant a;
  ModelConfig dense_cfg = base;
  dense_cfg.mlp_only_layers = {1};
  dense_cfg.dense_intermediate_size = base.intermediate_size;
  for (const char* w : {"gate_proj", "up_proj", "down_proj"})
    a.alias[l1 + w + ".weight"] = l1 + "experts.0." + w + ".weight";
  auto dense = a.make(dense_cfg);
  check(dense->weights().layers[1].dense() && !dense->weights().layers[0].dense() &&
            dense->weights().layers[1].mlp.w1->name == l1 + "gate_proj",
        "dense-MLP layer 1 loads mlp.{gate,up,down}_proj; layers 0 and 2 stay MoE");
  // B: layer 1 MoE with a zero router (all 48 probabilities tie: experts 0-7 chosen, each weighted 1/8 after
  // renormalisation) whose experts 0-7 are all expert 0: the same function as A.
  Variant b;
  b.add_zero_bf16(l1 + "gate.weight", {base.num_local_experts, base.hidden_size});
  for (int e = 1; e < 8; ++e)
    for (const char* w : {"gate_proj", "up_proj", "down_proj"})
      b.alias[l1 + "experts." + std::to_string(e) + "." + w + ".weight"] = l1 + "experts.0." + w + ".weight";
  auto moe = b.make(base);
  const std::vector<float> ta = trace(dense), tb = trace(moe);
  const double err = rel_err(ta.data(), tb.data(), tb.size());
  check(err < 1e-5, "dense-MLP layer equals an MoE layer routing to 8 copies of the same expert at 1/8 (rel " +
                        fmt(err) + ")");
  const std::vector<float> orig = trace(Model::load(qwen_model_dir(), EngineOptions{}));
  check(rel_err(ta.data(), orig.data(), orig.size()) > 1e-3, "...and differs from the fixture's own layer 1");

  // The dense layer under both placements: bitwise the same as one device.
  for (const auto& [devices, placement] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"cpu:0", "cpu:1"}, "layer"}, {{"cpu:0", "cpu:1", "cpu:2"}, "layer"}, {{"cpu:0", "cpu:1"}, "expert"}}) {
    EngineOptions eo;
    eo.devices = devices;
    eo.placement = placement;
    auto m = a.make(dense_cfg, eo);
    const std::vector<float> t = trace(m);
    check(t.size() == ta.size() && std::memcmp(t.data(), ta.data(), t.size() * 4) == 0,
          "dense layer, " + placement + " placement over " + std::to_string(devices.size()) +
              ": logits bitwise identical to one device (" + m->placement().summary() + ")");
  }
}

void check_variants() {
  const ModelConfig base = load_model_config(qwen_model_dir());
  auto model = Model::load(qwen_model_dir(), EngineOptions{});
  const std::vector<float> ref = trace(model);
  check(ref.size() == size_t(12 + 3) * 8256, "logits span all 8256 embedding rows (tokenizer: 8201 ids)");

  ModelConfig unnorm = base;
  unnorm.norm_topk_prob = false;
  Variant v;
  const std::vector<float> t = trace(v.make(unnorm));
  check(rel_err(t.data(), ref.data(), ref.size()) > 1e-3, "norm_topk_prob false changes the output (weights not renormalised)");

  ModelConfig tied = base;
  tied.tie_word_embeddings = true;
  Variant w;
  w.hidden = {"lm_head."};
  auto tm = w.make(tied);
  check(tm->weights().lm_head->name == "model.embed_tokens", "tied qwen3_moe: lm_head is model.embed_tokens.weight");
  Context c(tm);
  EvalCapture cap;
  cap.hidden = true;
  c.eval({563, 1203, 77}, cap);
  std::vector<float> row(size_t(base.hidden_size));
  double worst = 0;
  for (int id : {0, 17, 8191, 8200, 8255}) {
    tm->weights().embed_row(id, row.data());
    double dot = 0;
    for (int i = 0; i < base.hidden_size; ++i) dot += double(row[size_t(i)]) * cap.hidden_states.back()[size_t(2 * base.hidden_size + i)];
    worst = std::max(worst, std::abs(dot - cap.logits[size_t(id)]) / (std::abs(dot) + 1e-3));
  }
  check(worst < 1e-4, "tied logits = final hidden · embedding rows, padding rows included (worst rel " + fmt(worst) + ")");
}

}  // namespace

int main() {
  set_device_checks(true);
  check_config();
  check_dense_layers();
  check_variants();
  return finish();
}
