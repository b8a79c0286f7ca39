// Golden test: the float32 engine against transformers on every reference prompt of both fixture models —
// MixtralForCausalLM (../shared/fixtures/mixq-tiny-code/reference) and Qwen3MoeForCausalLM
// (../shared/fixtures/mixq-tiny-qwen3moe/reference: head_dim ≠ hidden/heads, per-head q/k norms, 48 experts top-8
// renormalised, an embedding with more rows than the tokenizer has ids): last logits, argmax per position, top-k
// experts and their weights per position and layer, hidden states per layer, greedy_32, router logits.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "engine.h"
#include "json.h"
#include "linear_dense.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

// The top-k weights the engine used, from its router logits [E] and chosen ids [k]: softmax, then renormalised when
// the config says so (what Backend::router computes; compared with transformers' weights below).
std::vector<double> route_weights(const float* logits, int E, const int32_t* ids, int K, bool renormalize) {
  const double mx = *std::max_element(logits, logits + E);
  double z = 0;
  for (int e = 0; e < E; ++e) z += std::exp(double(logits[e]) - mx);
  std::vector<double> w(static_cast<size_t>(K));
  double sum = 0;
  for (int j = 0; j < K; ++j) sum += (w[size_t(j)] = std::exp(double(logits[ids[j]]) - mx) / z);
  if (renormalize)
    for (double& v : w) v /= sum;
  return w;
}

// Routes of one prompt: per layer and position the same experts in the same order (or the same set where the
// reference's weights tie) and weights within 1e-4.
void check_routes(const std::string& name, const JsonValue& routes, const EvalCapture& cap, const ModelConfig& cfg,
                  int64_t n) {
  const int L = cfg.num_hidden_layers, E = cfg.num_local_experts, K = cfg.num_experts_per_tok;
  int64_t route_mismatch = 0;
  double worst_weight = 0;
  for (int l = 0; l < L; ++l) {
    const auto& experts = routes.as_array()[size_t(l)].find("experts")->as_array();
    const auto& weights = routes.as_array()[size_t(l)].find("weights")->as_array();
    for (int64_t t = 0; t < n; ++t) {
      const auto& re = experts[size_t(t)].as_array();
      const auto& rw = weights[size_t(t)].as_array();
      const int32_t* got = &cap.topk_experts[size_t(l)][size_t(t * K)];
      bool same = true;
      for (int j = 0; j < K; ++j) {
        if (re[size_t(j)].as_int() == got[j]) continue;
        // A different expert here is fine only when its reference weight ties with a neighbour's.
        const bool tie = (j > 0 && std::abs(rw[size_t(j)].as_number() - rw[size_t(j - 1)].as_number()) < 1e-6) ||
                         (j + 1 < K && std::abs(rw[size_t(j)].as_number() - rw[size_t(j + 1)].as_number()) < 1e-6);
        same &= tie;
      }
      std::set<int64_t> want(got, got + K), ref;
      for (int j = 0; j < K; ++j) ref.insert(re[size_t(j)].as_int());
      if (!same || want != ref) ++route_mismatch;
      const std::vector<double> w =
          route_weights(&cap.router[size_t(l)][size_t(t * E)], E, got, K, cfg.norm_topk_prob);
      for (int j = 0; j < K; ++j) worst_weight = std::max(worst_weight, std::abs(w[size_t(j)] - rw[size_t(j)].as_number()));
    }
  }
  check(route_mismatch == 0, name + ": top-" + std::to_string(K) + " experts equal at every position and layer",
        std::to_string(route_mismatch) + " differ");
  check(worst_weight <= 1e-4, name + ": expert weights within 1e-4 (worst " + fmt(worst_weight) + ")");
}

void check_fixture(const std::string& fixture, const std::string& model_dir, size_t min_prompts) {
  const std::string ref_dir = fixtures_dir() + "/" + fixture + "/reference";
  const JsonValue ref = parse_json_file(ref_dir + "/reference.json");
  const SafetensorsFile tensors(ref_dir + "/reference.safetensors");
  auto ref_tensor = [&](const std::string& name) -> const TensorView& {
    const TensorView* t = tensors.find(name);
    if (!t) throw Error("reference.safetensors lacks " + name);
    return *t;
  };

  EngineOptions eo;
  auto model = Model::load(model_dir, eo);
  const ModelConfig& cfg = model->config();
  std::printf("%s: %s, dense kernels: %s\n", fixture.c_str(), model->description().c_str(),
              dense_isa_name(best_dense_isa()));
  const int L = cfg.num_hidden_layers, E = cfg.num_local_experts;
  const int64_t vocab = cfg.vocab_size, hidden = cfg.hidden_size;

  const auto& prompts = ref.find("prompts")->as_array();
  check(prompts.size() >= min_prompts, fixture + ": reference has " + std::to_string(prompts.size()) + " prompts");
  for (const JsonValue& p : prompts) {
    const std::string name = fixture + "/" + p.find("name")->as_string();
    const std::string key = p.find("name")->as_string();
    std::vector<int32_t> ids;
    for (const JsonValue& v : p.find("input_ids")->as_array()) ids.push_back(int32_t(v.as_int()));
    const int64_t n = int64_t(ids.size());

    Context ctx(model);
    EvalCapture cap;
    cap.all_logits = true;
    cap.hidden = true;
    cap.router_logits = true;
    ctx.eval(ids, cap);

    // last-position logits
    const TensorView& last = ref_tensor(key + ".last_logits");
    const double lerr = rel_err(&cap.logits[size_t((n - 1) * vocab)], static_cast<const float*>(last.data), size_t(vocab));
    check(lerr <= 1e-4, name + ": last logits rel err " + fmt(lerr) + " <= 1e-4");

    // argmax at every position
    const auto& argmax_ref = p.find("argmax")->as_array();
    int64_t mismatches = 0;
    for (int64_t t = 0; t < n; ++t) {
      const float* row = &cap.logits[size_t(t * vocab)];
      const int64_t am = std::max_element(row, row + vocab) - row;
      if (am != argmax_ref[size_t(t)].as_int()) ++mismatches;
    }
    check(mismatches == 0, name + ": argmax equal at all " + std::to_string(n) + " positions",
          std::to_string(mismatches) + " differ");

    // hidden states K = 0..L
    double worst_hidden = 0;
    for (int k = 0; k <= L; ++k) {
      const TensorView& h = ref_tensor(key + ".hidden." + std::to_string(k));
      worst_hidden = std::max(worst_hidden, rel_err(cap.hidden_states[size_t(k)].data(),
                                                    static_cast<const float*>(h.data), size_t(n * hidden)));
    }
    check(worst_hidden <= 1e-4, name + ": hidden states (all " + std::to_string(L + 1) + ") worst rel err " +
                                    fmt(worst_hidden) + " <= 1e-4");

    // router logits and routes
    double worst_router = 0;
    for (int l = 0; l < L; ++l) {
      const TensorView& rl = ref_tensor(key + ".router_logits." + std::to_string(l));
      worst_router = std::max(worst_router, rel_err(cap.router[size_t(l)].data(), static_cast<const float*>(rl.data),
                                                    size_t(n * E)));
    }
    check(worst_router <= 1e-4, name + ": router logits worst rel err " + fmt(worst_router));
    check_routes(name, *p.find("routes"), cap, cfg, n);

    // greedy_32: 32 greedy tokens, no early stop
    Context gctx(model);
    GenerateOptions go;
    go.max_tokens = 32;
    go.ignore_eos = true;
    const GenerateResult gr = generate(gctx, ids, go, nullptr, nullptr);
    std::vector<int32_t> want;
    for (const JsonValue& v : p.find("greedy_32")->as_array()) want.push_back(int32_t(v.as_int()));
    int first_diff = -1;
    for (size_t i = 0; i < want.size(); ++i)
      if (i >= gr.tokens.size() || gr.tokens[i] != want[i]) { first_diff = int(i); break; }
    check(gr.tokens.size() == want.size() && first_diff < 0, name + ": greedy_32 identical",
          "first difference at token " + std::to_string(first_diff));
  }
}

}  // namespace

int main() {
  require_fixtures();
  check_fixture("mixq-tiny-code", tiny_model_dir(), 7);
  check_fixture("mixq-tiny-qwen3moe", qwen_model_dir(), 6);
  return finish();
}
