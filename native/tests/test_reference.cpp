// Golden test: the float32 engine against transformers' MixtralForCausalLM on every reference prompt
// (../shared/fixtures/mixq-tiny-code/reference): last logits, argmax per position, top-2 experts per
// position and layer, hidden states per layer, greedy_32, router logits.
#include <algorithm>
#include <cstdio>
#include <set>

#include "engine.h"
#include "json.h"
#include "linear_dense.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

int main() {
  require_fixtures();
  const std::string ref_dir = fixtures_dir() + "/mixq-tiny-code/reference";
  const JsonValue ref = parse_json_file(ref_dir + "/reference.json");
  const SafetensorsFile tensors(ref_dir + "/reference.safetensors");
  auto ref_tensor = [&](const std::string& name) -> const TensorView& {
    const TensorView* t = tensors.find(name);
    if (!t) throw Error("reference.safetensors lacks " + name);
    return *t;
  };

  EngineOptions eo;
  auto model = Model::load(tiny_model_dir(), eo);
  const ModelConfig& cfg = model->config();
  std::printf("model: %s, dense kernels: %s\n", model->description().c_str(), dense_isa_name(best_dense_isa()));
  const int L = cfg.num_hidden_layers, E = cfg.num_local_experts, K = cfg.num_experts_per_tok;
  const int64_t vocab = cfg.vocab_size, hidden = cfg.hidden_size;

  const auto& prompts = ref.find("prompts")->as_array();
  check(prompts.size() >= 7, "reference has " + std::to_string(prompts.size()) + " prompts");
  for (const JsonValue& p : prompts) {
    const std::string name = p.find("name")->as_string();
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
    const TensorView& last = ref_tensor(name + ".last_logits");
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
      const TensorView& h = ref_tensor(name + ".hidden." + std::to_string(k));
      worst_hidden = std::max(worst_hidden, rel_err(cap.hidden_states[size_t(k)].data(),
                                                    static_cast<const float*>(h.data), size_t(n * hidden)));
    }
    check(worst_hidden <= 1e-4, name + ": hidden states (all " + std::to_string(L + 1) + ") worst rel err " +
                                    fmt(worst_hidden) + " <= 1e-4");

    // router logits and routes
    double worst_router = 0;
    int64_t route_mismatch = 0, weight_bad = 0;
    const auto& routes = p.find("routes")->as_array();
    for (int l = 0; l < L; ++l) {
      const TensorView& rl = ref_tensor(name + ".router_logits." + std::to_string(l));
      worst_router = std::max(worst_router, rel_err(cap.router[size_t(l)].data(), static_cast<const float*>(rl.data),
                                                    size_t(n * E)));
      const auto& experts = routes[size_t(l)].find("experts")->as_array();
      const auto& weights = routes[size_t(l)].find("weights")->as_array();
      for (int64_t t = 0; t < n; ++t) {
        const auto& re = experts[size_t(t)].as_array();
        const auto& rw = weights[size_t(t)].as_array();
        std::set<int64_t> want, got;
        bool ordered = true;
        for (int j = 0; j < K; ++j) {
          want.insert(re[size_t(j)].as_int());
          got.insert(cap.topk_experts[size_t(l)][size_t(t * K + j)]);
          ordered &= re[size_t(j)].as_int() == cap.topk_experts[size_t(l)][size_t(t * K + j)];
        }
        // Order as given, or as a set when the reference's two weights tie.
        const bool tie = std::abs(rw[0].as_number() - rw[1].as_number()) < 1e-6;
        if (!(ordered || (tie && want == got))) ++route_mismatch;
      }
    }
    check(worst_router <= 1e-4, name + ": router logits worst rel err " + fmt(worst_router));
    check(route_mismatch == 0, name + ": top-" + std::to_string(K) + " experts equal at every position and layer",
          std::to_string(route_mismatch) + " differ");
    (void)weight_bad;

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
  return finish();
}
