// generate(): streaming order, stop on EOS / stop ids / max tokens / callback / context full,
// cancellation within one token, seeded sampling reproducibility. Bundled fixture model only.
#include <cstdio>

#include "engine.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

int main() {
  EngineOptions eo;
  auto model = Model::load(tiny_model_dir(), eo);
  // BOS + the start of a Python function.
  const std::vector<int32_t> prompt = {1, 473, 6498, 329, 427, 820, 686, 801, 467, 263};

  {  // streamed tokens arrive in order and equal the result
    Context c(model);
    GenerateOptions go;
    go.max_tokens = 12;
    go.ignore_eos = true;
    std::vector<int32_t> streamed;
    const GenerateResult r = generate(c, prompt, go, [&](int32_t t) { streamed.push_back(t); return true; }, nullptr);
    check(streamed == r.tokens && r.tokens.size() == 12 && r.stop_reason == StopReason::MaxTokens,
          "12 tokens streamed in order, stop_reason max_tokens");
    check(r.prefill_ms > 0 && r.decode_ms > 0, "prefill_ms and decode_ms are measured");

    // stop id: stop on the 4th token the greedy run produced
    Context c2(model);
    GenerateOptions gs = go;
    gs.stop_ids = {r.tokens[3]};
    const GenerateResult rs = generate(c2, prompt, gs, nullptr, nullptr);
    size_t first = 0;
    while (r.tokens[first] != r.tokens[3]) ++first;
    check(rs.stop_reason == StopReason::StopId && rs.tokens.size() == first + 1 && rs.tokens.back() == r.tokens[3],
          "stop id ends generation on its first occurrence (stop id included)");

    // callback returning false stops after that token
    Context c3(model);
    int seen = 0;
    const GenerateResult rb = generate(c3, prompt, go, [&](int32_t) { return ++seen < 5; }, nullptr);
    check(rb.stop_reason == StopReason::Callback && rb.tokens.size() == 5, "callback returning false stops (5 tokens)");

    // cancellation: set during the 3rd token's callback → no 4th token
    Context c4(model);
    std::atomic<bool> cancel{false};
    int n = 0;
    const GenerateResult rc = generate(c4, prompt, go, [&](int32_t) { if (++n == 3) cancel = true; return true; }, &cancel);
    check(rc.stop_reason == StopReason::Cancelled && rc.tokens.size() == 3, "cancel stops within one token (3 tokens)");
    std::atomic<bool> pre{true};
    const GenerateResult rp = generate(c4, prompt, go, nullptr, &pre);
    check(rp.stop_reason == StopReason::Cancelled && rp.tokens.empty() && rp.evaluated_tokens == 0,
          "cancel before start evaluates nothing");
  }

  {  // EOS: a model whose config names as EOS a token the greedy run produces (the fixture's
     // short greedy runs contain no </s>): generation stops at its first occurrence unless ignore_eos.
    Context c(model);
    GenerateOptions go;
    go.max_tokens = 12;
    go.ignore_eos = true;
    const GenerateResult base = generate(c, prompt, go, nullptr, nullptr);
    ModelConfig cfg = load_model_config(tiny_model_dir());
    cfg.eos_token_id = base.tokens[4];
    auto store = std::shared_ptr<WeightStore>(WeightStore::open(tiny_model_dir()));
    auto eos_model = make_model(cfg, [&](const std::string& n) { return store->find(n); }, store, eo, tiny_model_dir(),
                                "fixture");
    size_t first = 0;
    while (base.tokens[first] != base.tokens[4]) ++first;
    Context ce(eos_model);
    GenerateOptions ge = go;
    ge.ignore_eos = false;
    const GenerateResult re = generate(ce, prompt, ge, nullptr, nullptr);
    check(re.stop_reason == StopReason::Eos && re.tokens.size() == first + 1 && re.tokens.back() == cfg.eos_token_id,
          "EOS ends generation at its first occurrence (EOS included)");
    Context ci(eos_model);
    const GenerateResult ri = generate(ci, prompt, go, nullptr, nullptr);
    check(ri.stop_reason == StopReason::MaxTokens && ri.tokens == base.tokens, "ignore_eos keeps going to max_tokens");
  }

  {  // context full
    Context c(model, 16);
    GenerateOptions go;
    go.max_tokens = 100;
    go.ignore_eos = true;
    const GenerateResult r = generate(c, prompt, go, nullptr, nullptr);
    check(r.stop_reason == StopReason::ContextFull && c.n_past() == 16 && r.tokens.size() == 7,
          "context of 16: stops with context_full after 7 tokens (" + std::to_string(r.tokens.size()) + ")");
    std::vector<int32_t> too_long(20, 263);
    check_throws([&] { generate(c, too_long, go, nullptr, nullptr); }, {"exceeds the context capacity"},
                 "a prompt longer than the context is an error");
    check_throws([&] { generate(c, {1, 99999}, go, nullptr, nullptr); }, {"99999", "out of range"},
                 "an out-of-range token id is an error");
  }

  {  // seeded sampling: same seed → same tokens; different seed → (almost surely) different
    GenerateOptions go;
    go.max_tokens = 24;
    go.ignore_eos = true;
    go.sampling.greedy = false;
    go.sampling.temperature = 1.2f;
    go.sampling.top_k = 50;
    go.sampling.top_p = 0.95f;
    go.sampling.seed = 42;
    Context a(model), b(model), d(model);
    const GenerateResult ra = generate(a, prompt, go, nullptr, nullptr);
    const GenerateResult rb = generate(b, prompt, go, nullptr, nullptr);
    go.sampling.seed = 43;
    const GenerateResult rd = generate(d, prompt, go, nullptr, nullptr);
    check(ra.tokens == rb.tokens, "sampling with seed 42 twice gives the same 24 tokens");
    check(ra.tokens != rd.tokens, "seeds 42 and 43 give different samples");
  }
  return finish();
}
