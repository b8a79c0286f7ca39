// config.json → ModelConfig, with every field validated and every error naming the file and field.
#include <cmath>
#include <sstream>
#include <vector>

#include "error.h"
#include "json.h"
#include "model_config.h"

namespace mixq {

namespace {

struct ConfigReader {
  const JsonValue& root;
  std::string path;
  std::string family = "mixtral";

  [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
    throw Error(path + ": field \"" + field + "\" " + msg);
  }
  const JsonValue& required(const std::string& field) const {
    const JsonValue* v = root.find(field);
    if (!v) fail(field, "is missing (required for a " + family + " model)");
    return *v;
  }
  int positive_int(const std::string& field) const {
    const JsonValue& v = required(field);
    if (!v.is_number()) fail(field, std::string("must be an integer, got ") + JsonValue::type_name(v.type()));
    int64_t i;
    try {
      i = v.as_int(field);
    } catch (const Error&) {
      fail(field, "must be an integer");
    }
    if (i <= 0 || i > (int64_t(1) << 30)) fail(field, "must be a positive integer, got " + std::to_string(i));
    return int(i);
  }
  double positive_number(const std::string& field) const {
    const JsonValue& v = required(field);
    if (!v.is_number()) fail(field, std::string("must be a number, got ") + JsonValue::type_name(v.type()));
    const double d = v.as_number();
    if (!(d > 0) || !std::isfinite(d)) fail(field, "must be a positive number");
    return d;
  }
  // A positive number within [lo, hi]: values outside are not a model's, they are a typo or an attack.
  double number_in(const std::string& field, double lo, double hi) const {
    const double d = positive_number(field);
    if (d < lo || d > hi) {
      std::ostringstream m;
      m << "is " << d << ", outside the range a model uses [" << lo << ", " << hi << "]";
      fail(field, m.str());
    }
    return d;
  }
  // Optional integer token id in [0, vocab): absent/null → fallback; lists (several EOS ids) → first entry, every
  // entry checked.
  int optional_token_id(const std::string& field, int fallback, int vocab) const {
    const JsonValue* v = root.find(field);
    if (!v || v->is_null()) return fallback;
    std::vector<const JsonValue*> ids;
    if (v->is_array()) {
      if (v->size() == 0) return fallback;
      for (const JsonValue& e : v->as_array()) ids.push_back(&e);
    } else {
      ids.push_back(v);
    }
    for (const JsonValue* id : ids) {
      if (!id->is_integer()) fail(field, "must be an integer token id");
      if (id->as_int() < 0 || id->as_int() >= vocab) {
        fail(field, "is " + std::to_string(id->as_int()) + ", not a token id of the vocabulary (vocab_size " +
                        std::to_string(vocab) + ": 0.." + std::to_string(vocab - 1) + ")");
      }
    }
    return int(ids.front()->as_int());
  }
  // Optional boolean: absent/null → fallback.
  bool optional_bool(const std::string& field, bool fallback) const {
    const JsonValue* v = root.find(field);
    if (!v || v->is_null()) return fallback;
    if (!v->is_bool()) fail(field, "must be a boolean");
    return v->as_bool();
  }
};

// Qwen3-MoE's own fields: expert count and width, norm_topk_prob, q/k norms, which layers are MoE, and the variants
// this engine does not run (shared experts, sliding-window layers, attention biases) refused by name.
void read_qwen3_moe(const ConfigReader& r, ModelConfig& c) {
  c.num_local_experts = r.positive_int("num_experts");
  c.intermediate_size = r.positive_int("moe_intermediate_size");
  c.norm_topk_prob = r.optional_bool("norm_topk_prob", false);  // transformers' Qwen3MoeConfig default
  c.qk_norm = true;
  if (!r.root.find("head_dim") || r.root.find("head_dim")->is_null()) {
    r.fail("head_dim", "is missing (required for a qwen3_moe model: its q width need not be hidden_size)");
  }
  if (r.root.find("decoder_sparse_step") && !r.root.find("decoder_sparse_step")->is_null()) {
    c.decoder_sparse_step = r.positive_int("decoder_sparse_step");
  }
  if (const JsonValue* m = r.root.find("mlp_only_layers"); m && !m->is_null()) {
    if (!m->is_array()) r.fail("mlp_only_layers", "must be a list of layer indices");
    for (const JsonValue& v : m->as_array()) {
      if (!v.is_integer() || v.as_int() < 0 || v.as_int() >= c.num_hidden_layers) {
        r.fail("mlp_only_layers", "holds an entry that is not a layer index 0.." + std::to_string(c.num_hidden_layers - 1));
      }
      c.mlp_only_layers.push_back(int(v.as_int()));
    }
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (c.moe_layer(l)) continue;
    c.dense_intermediate_size = r.positive_int("intermediate_size");  // dense-MLP layers are configured
    break;
  }
  if (r.optional_bool("use_sliding_window", false)) {
    r.fail("use_sliding_window", "is true: Qwen3-MoE sliding-window layers are not supported");
  }
  if (const JsonValue* lt = r.root.find("layer_types"); lt && lt->is_array()) {
    for (const JsonValue& t : lt->as_array())
      if (!t.is_string() || t.as_string() != "full_attention") {
        r.fail("layer_types", "lists a layer that is not \"full_attention\": sliding-window layers are not supported");
      }
  }
  if (const JsonValue* se = r.root.find("shared_expert_intermediate_size"); se && !se->is_null()) {
    if (!se->is_number() || se->as_number() != 0) {
      r.fail("shared_expert_intermediate_size", "is set: shared experts are not supported");
    }
  }
  if (r.optional_bool("attention_bias", false)) r.fail("attention_bias", "is true: attention biases are not supported");
}

}  // namespace

bool ModelConfig::moe_layer(int layer) const {
  for (int l : mlp_only_layers)
    if (l == layer) return false;
  return (layer + 1) % decoder_sparse_step == 0;
}

WeightNames ModelConfig::names() const {
  if (model_type == "qwen3_moe") return {"mlp", "gate_proj", "down_proj", "up_proj"};
  return {"block_sparse_moe", "w1", "w2", "w3"};
}

ModelConfig load_model_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  const JsonValue root = parse_json_file(path);
  if (!root.is_object()) throw Error(path + ": expected a JSON object");
  ConfigReader r{root, path};
  ModelConfig c;

  const JsonValue& mt = r.required("model_type");
  if (!mt.is_string()) r.fail("model_type", "must be a string");
  c.model_type = mt.as_string();
  if (c.model_type != "mixtral" && c.model_type != "qwen3_moe") {
    r.fail("model_type", "is \"" + c.model_type + "\"; only \"mixtral\" and \"qwen3_moe\" models are supported");
  }
  r.family = c.model_type;

  c.hidden_size = r.positive_int("hidden_size");
  c.num_hidden_layers = r.positive_int("num_hidden_layers");
  c.num_attention_heads = r.positive_int("num_attention_heads");
  c.num_key_value_heads = r.positive_int("num_key_value_heads");
  if (c.model_type == "qwen3_moe") {
    read_qwen3_moe(r, c);
  } else {
    c.intermediate_size = r.positive_int("intermediate_size");
    c.num_local_experts = r.positive_int("num_local_experts");
  }
  c.num_experts_per_tok = r.positive_int("num_experts_per_tok");
  c.vocab_size = r.positive_int("vocab_size");
  c.max_position_embeddings = r.positive_int("max_position_embeddings");
  // Published models use rope_theta 1e4..1e8 and rms_norm_eps 1e-6..1e-5; the ranges leave room either side.
  c.rope_theta = r.number_in("rope_theta", 1.0, 1e12);
  c.rms_norm_eps = r.number_in("rms_norm_eps", 1e-12, 0.1);

  const JsonValue* hd = root.find("head_dim");
  if (hd && !hd->is_null()) {
    c.head_dim = r.positive_int("head_dim");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      r.fail("hidden_size", "(" + std::to_string(c.hidden_size) + ") is not divisible by num_attention_heads (" +
                                std::to_string(c.num_attention_heads) + ") and no head_dim is given");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) r.fail("head_dim", "must be even for rotary embeddings");
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    r.fail("num_key_value_heads", "(" + std::to_string(c.num_key_value_heads) +
                                      ") must divide num_attention_heads (" + std::to_string(c.num_attention_heads) + ")");
  }
  if (c.num_experts_per_tok > c.num_local_experts) {
    r.fail("num_experts_per_tok", "exceeds num_local_experts");
  }

  const JsonValue* tie = root.find("tie_word_embeddings");
  if (tie && !tie->is_null()) {
    if (!tie->is_bool()) r.fail("tie_word_embeddings", "must be a boolean");
    c.tie_word_embeddings = tie->as_bool();
  }

  const JsonValue* sw = root.find("sliding_window");
  if (!sw || sw->is_null() || c.model_type == "qwen3_moe") {  // absent: none (MixtralConfig); Qwen3-MoE: see above
    c.sliding_window = 0;
  } else {
    c.sliding_window = r.positive_int("sliding_window");
  }

  c.bos_token_id = r.optional_token_id("bos_token_id", 1, c.vocab_size);
  c.eos_token_id = r.optional_token_id("eos_token_id", 2, c.vocab_size);

  if (const JsonValue* rs = root.find("rope_scaling"); rs && !rs->is_null()) {
    r.fail("rope_scaling", "is set: scaled rotary embeddings are not supported");
  }

  const JsonValue* act = root.find("hidden_act");
  if (act && act->is_string() && act->as_string() != "silu") {
    r.fail("hidden_act", "is \"" + act->as_string() + "\"; only \"silu\" is supported");
  }

  const JsonValue* q = root.find("quantization_config");
  if (q && !q->is_null()) {
    if (!q->is_object()) r.fail("quantization_config", "must be an object");
    auto qfield = [&](const char* name) -> const JsonValue* { return q->find(name); };
    const std::string qn = "quantization_config.";
    c.quant.enabled = true;
    const JsonValue* m = qfield("quant_method");
    if (!m || !m->is_string()) r.fail(qn + "quant_method", "is missing or not a string");
    c.quant.quant_method = m->as_string();
    if (const JsonValue* b = qfield("bits")) {
      if (!b->is_integer()) r.fail(qn + "bits", "must be an integer");
      c.quant.bits = int(b->as_int());
    }
    if (const JsonValue* g = qfield("group_size")) {
      if (!g->is_integer() || g->as_int() == 0 || g->as_int() < -1) {
        r.fail(qn + "group_size", "must be a positive integer or -1 (one group per input row)");
      }
      c.quant.group_size = int(g->as_int());
    }
    if (const JsonValue* z = qfield("zero_point")) {
      if (!z->is_bool()) r.fail(qn + "zero_point", "must be a boolean");
      c.quant.zero_point = z->as_bool();
    }
    if (const JsonValue* v = qfield("version")) {
      if (!v->is_string()) r.fail(qn + "version", "must be a string");
      c.quant.version = v->as_string();
    }
  }
  return c;
}

}  // namespace mixq
