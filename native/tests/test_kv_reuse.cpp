// KV-cache reuse across generate() calls: the longest common prefix of the cached ids and the new
// prompt is kept, so one more typed token costs one evaluated token, with results identical to a
// cold run. Uses the bundled fixture model only (no ../shared needed).
#include <cstdio>

#include "engine.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

std::vector<float> last_logits_cold(const std::shared_ptr<Model>& m, const std::vector<int32_t>& ids) {
  Context c(m);
  EvalCapture cap;
  c.eval(ids, cap);
  return cap.logits;
}

}  // namespace

int main() {
  EngineOptions eo;
  auto model = Model::load(tiny_model_dir(), eo);
  // "def fibonacci(n):\n    ..." as ids (BOS first), the start of the python_def reference prompt.
  const std::vector<int32_t> prompt = {1, 473, 6498, 329, 427, 820, 686, 801, 467, 263, 7438, 472, 454, 276, 435,
                                       657, 7773, 427, 820, 686, 1222, 1980, 263, 821, 454, 845, 411, 281, 289, 263};
  const int n = int(prompt.size());

  Context ctx(model);
  GenerateOptions go;
  go.max_tokens = 8;
  go.ignore_eos = true;
  const GenerateResult first = generate(ctx, prompt, go, nullptr, nullptr);
  check(first.reused_tokens == 0 && first.evaluated_tokens == n + 7,
        "cold call evaluates the prompt + 7 decode steps (" + std::to_string(first.evaluated_tokens) + ")");

  for (int variant = 0; variant < 2; ++variant) {
    // variant 0: the typed token is the one the model generated (already in the cache);
    // variant 1: a different token (the cache diverges right after the prompt).
    std::vector<int32_t> longer = prompt;
    longer.push_back(variant == 0 ? first.tokens[0] : 623);
    const std::string tag = variant == 0 ? "prompt + generated token" : "prompt + other token";

    // Re-seed the cache with the original prompt's state.
    Context warm(model);
    generate(warm, prompt, go, nullptr, nullptr);
    GenerateOptions one = go;
    one.max_tokens = 1;
    const GenerateResult r1 = generate(warm, longer, one, nullptr, nullptr);
    check(r1.evaluated_tokens == 1 && r1.reused_tokens == n,
          tag + ": evaluates exactly 1 token (evaluated " + std::to_string(r1.evaluated_tokens) + ", reused " +
              std::to_string(r1.reused_tokens) + ")");

    // Same continuation as a cold run, token for token.
    Context warm2(model);
    generate(warm2, prompt, go, nullptr, nullptr);
    const GenerateResult rw = generate(warm2, longer, go, nullptr, nullptr);
    Context cold(model);
    const GenerateResult rc = generate(cold, longer, go, nullptr, nullptr);
    check(rw.tokens == rc.tokens, tag + ": warm tokens equal cold tokens");
    check(rw.evaluated_tokens == 1 + 7 && rc.evaluated_tokens == int(longer.size()) + 7,
          tag + ": warm evaluated " + std::to_string(rw.evaluated_tokens) + ", cold " + std::to_string(rc.evaluated_tokens));

    // Logits: incremental eval of the extra token vs one batched cold eval.
    Context inc(model);
    EvalCapture cap;
    inc.eval(prompt, cap);
    inc.eval({longer.back()}, cap);
    const std::vector<float> cold_logits = last_logits_cold(model, longer);
    const double err = rel_err(cap.logits.data(), cold_logits.data(), cold_logits.size());
    check(err <= 1e-6, tag + ": logits of the incremental step vs cold run rel err " + fmt(err) + " <= 1e-6");
  }

  // Chunked prefill (3-token chunks) gives bit-identical logits and the same tokens as one batch.
  {
    Context a(model), b(model);
    EvalCapture ca, cb;
    a.eval(prompt, ca);
    for (size_t i = 0; i < prompt.size(); i += 3)
      b.eval(std::vector<int32_t>(prompt.begin() + std::ptrdiff_t(i), prompt.begin() + std::ptrdiff_t(std::min(prompt.size(), i + 3))), cb);
    check(ca.logits == cb.logits, "prefill in chunks of 3 gives bit-identical logits to one batch");
    GenerateOptions gc = go;
    gc.prefill_chunk = 7;
    Context c1(model), c2(model);
    const GenerateResult r1 = generate(c1, prompt, gc, nullptr, nullptr);
    const GenerateResult r2 = generate(c2, prompt, go, nullptr, nullptr);
    check(r1.tokens == r2.tokens && r1.evaluated_tokens == r2.evaluated_tokens, "generate with prefill_chunk 7 = default");
  }

  // Same prompt again: everything but the last prompt token is reused (fresh logits need one eval).
  {
    Context c(model);
    GenerateOptions one = go;
    one.max_tokens = 1;
    generate(c, prompt, one, nullptr, nullptr);
    const GenerateResult again = generate(c, prompt, one, nullptr, nullptr);
    check(again.reused_tokens == n - 1 && again.evaluated_tokens == 1,
          "identical prompt: reuses n-1, evaluates 1 (" + std::to_string(again.evaluated_tokens) + ")");
  }

  // Edit in the middle: the cache is cut at the first difference and results match a cold run.
  {
    Context c(model);
    generate(c, prompt, go, nullptr, nullptr);
    std::vector<int32_t> edited = prompt;
    edited[10] = 801;
    const GenerateResult re = generate(c, edited, go, nullptr, nullptr);
    Context cold(model);
    const GenerateResult rc = generate(cold, edited, go, nullptr, nullptr);
    check(re.reused_tokens == 10 && re.evaluated_tokens == n - 10 + 7,
          "edit at position 10: reuses 10 tokens, evaluates " + std::to_string(re.evaluated_tokens));
    check(re.tokens == rc.tokens, "edit at position 10: tokens equal a cold run");
    std::vector<int32_t> expect_cache = edited;
    expect_cache.insert(expect_cache.end(), re.tokens.begin(), re.tokens.end() - 1);
    check(c.cached_tokens() == expect_cache, "cached_tokens() = prompt + generated tokens except the last");
  }
  return finish();
}
