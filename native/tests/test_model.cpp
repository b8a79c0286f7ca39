// Model-level variants built from the bundled fixture's tensors with an edited config:
// tied embeddings (lm_head = embedding matrix), a sliding window, the ModelWeights walk, capacity.
#include <cmath>
#include <cstdio>

#include "engine.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

std::shared_ptr<Model> variant(const ModelConfig& cfg, bool hide_lm_head) {
  auto store = std::shared_ptr<WeightStore>(WeightStore::open(tiny_model_dir()));
  TensorLookup lookup = [&](const std::string& n) -> const TensorView* {
    if (hide_lm_head && n.rfind("lm_head.", 0) == 0) return nullptr;
    return store->find(n);
  };
  return make_model(cfg, lookup, store, EngineOptions{}, tiny_model_dir(), "fixture");
}

std::vector<int32_t> ids_of_length(int n) {
  std::vector<int32_t> ids{1};
  for (int i = 1; i < n; ++i) ids.push_back(int32_t(263 + (i * 37) % 4000));
  return ids;
}

}  // namespace

int main() {
  const ModelConfig base = load_model_config(tiny_model_dir());
  auto model = Model::load(tiny_model_dir(), EngineOptions{});

  {  // ModelWeights walk: every layer has its Linears with the config's shapes
    const ModelWeights& w = model->weights();
    bool ok = int(w.layers.size()) == base.num_hidden_layers;
    for (const LayerWeights& l : w.layers) {
      ok &= l.q->out_features == base.num_attention_heads * base.head_dim && l.q->in_features == base.hidden_size;
      ok &= l.k->out_features == base.num_key_value_heads * base.head_dim;
      ok &= l.gate->out_features == base.num_local_experts && int(l.experts.size()) == base.num_local_experts;
      ok &= l.experts[0].w2->in_features == base.intermediate_size && l.experts[0].w1->kind() == "bf16";
    }
    check(ok, "ModelWeights exposes q/k/v/o, router and experts[E]{w1,w2,w3} per layer with config shapes");
    check(model->weight_bytes() == 35148288 - 4 * 2 * 256 * 2 - 256 * 2,
          "weight_bytes = checkpoint bytes minus the (f32-widened) norm vectors: " + std::to_string(model->weight_bytes()));
    check(w.decode_bytes_per_token(2) < model->weight_bytes(), "decode streams fewer bytes than the whole model");
  }

  {  // tie_word_embeddings: lm_head is the embedding matrix
    ModelConfig cfg = base;
    cfg.tie_word_embeddings = true;
    auto tied = variant(cfg, /*hide_lm_head=*/true);
    check(tied->weights().lm_head->name == "model.embed_tokens", "tied model: lm_head reads model.embed_tokens.weight");
    Context c(tied);
    EvalCapture cap;
    cap.hidden = true;
    const std::vector<int32_t> ids = ids_of_length(5);
    c.eval(ids, cap);
    const std::vector<float>& h = cap.hidden_states.back();  // final-normed [n, hidden]
    const int hidden = cfg.hidden_size;
    std::vector<float> row(static_cast<size_t>(hidden));
    double worst = 0;
    for (int v = 0; v < cfg.vocab_size; v += 97) {
      tied->weights().embed_row(v, row.data());
      double dot = 0;
      for (int i = 0; i < hidden; ++i) dot += double(row[size_t(i)]) * h[size_t(4 * hidden + i)];
      worst = std::max(worst, std::fabs(dot - cap.logits[size_t(v)]) / (std::fabs(dot) + 1e-3));
    }
    check(worst < 1e-4, "tied logits = final hidden · embedding rows (worst rel " + fmt(worst) + ")");
    ModelConfig untied = base;
    check_throws([&] { variant(untied, true); }, {"lm_head.weight", "not found"},
                 "untied config without lm_head.weight is an error");
  }

  {  // sliding window at model level: no effect while the sequence fits, an effect beyond it
    ModelConfig cfg = base;
    cfg.sliding_window = 8;
    auto windowed = variant(cfg, false);
    for (int n : {8, 20}) {
      const std::vector<int32_t> ids = ids_of_length(n);
      Context a(model), b(windowed);
      EvalCapture ca, cb;
      a.eval(ids, ca);
      b.eval(ids, cb);
      const double err = rel_err(cb.logits.data(), ca.logits.data(), ca.logits.size());
      if (n <= 8) check(err == 0, "window 8, " + std::to_string(n) + " tokens: logits identical to full attention");
      else check(err > 1e-3, "window 8, " + std::to_string(n) + " tokens: logits differ from full attention (" + fmt(err) + ")");
    }
    // Incremental decode with a window equals one batched eval with the same window.
    const std::vector<int32_t> ids = ids_of_length(20);
    Context inc(windowed), batch(windowed);
    EvalCapture ci, cb;
    inc.eval(std::vector<int32_t>(ids.begin(), ids.begin() + 12), ci);
    for (size_t i = 12; i < ids.size(); ++i) inc.eval({ids[i]}, ci);
    batch.eval(ids, cb);
    check(rel_err(ci.logits.data(), cb.logits.data(), cb.logits.size()) < 1e-6,
          "windowed: token-by-token decode equals a batched eval");
  }

  {  // thread count never changes results: 1, 2 (one expert per thread in decode) and 3 threads
    std::vector<std::vector<float>> logits;
    for (int threads : {1, 2, 3}) {
      EngineOptions eo;
      eo.threads = threads;
      auto m = Model::load(tiny_model_dir(), eo);
      Context c(m);
      EvalCapture cap;
      c.eval(ids_of_length(9), cap);
      std::vector<float> all = cap.logits;
      for (int32_t t : {263, 801, 467}) {
        c.eval({t}, cap);
        all.insert(all.end(), cap.logits.begin(), cap.logits.end());
      }
      logits.push_back(all);
    }
    check(logits[0] == logits[1] && logits[0] == logits[2],
          "prefill + 3 decode steps give bit-identical logits with 1, 2 and 3 threads");
  }

  {  // capacity: explicit, from options, overflow error
    EngineOptions eo;
    eo.context_length = 64;
    auto m64 = Model::load(tiny_model_dir(), eo);
    Context c(m64);
    check(c.capacity() == 64 && Context(model).capacity() == 4096, "context capacity from options (64) / default min(max_pos, 4096)");
    EvalCapture cap;
    c.eval(ids_of_length(60), cap);
    check_throws([&] { c.eval(ids_of_length(5), cap); }, {"context full", "64"}, "overflowing the KV cache is an error");
    c.truncate(10);
    c.eval(ids_of_length(5), cap);
    check(c.n_past() == 15, "truncate(10) then 5 more tokens: n_past 15");
    check_throws([&] { Model::load(tiny_model_dir(), EngineOptions{"cuda:3"}); }, {"cuda:3"},
                 "an unsupported device is named in the error");
  }
  return finish();
}
