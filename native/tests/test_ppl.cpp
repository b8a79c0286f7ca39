// Perplexity of the float32 engine on ../shared/fixtures/valid_ids.safetensors (first 120 windows of
// 512 tokens, each window predicting its own next tokens) within 0.1% of valid_ppl_fp32.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "engine.h"
#include "json.h"
#include "perplexity.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

int main() {
  require_fixtures();
  const JsonValue figures = parse_json_file(fixtures_dir() + "/reference-figures.json");
  const double want = figures.find("mixq-tiny-code")->find("valid_ppl_fp32")->as_number();
  const SafetensorsFile valid(fixtures_dir() + "/valid_ids.safetensors");
  const TensorView* ids = valid.find("ids");
  if (!check(ids && ids->dtype == DType::I32, "valid_ids.safetensors has int32 `ids`")) return finish();

  EngineOptions eo;
  auto model = Model::load(tiny_model_dir(), eo);
  Context ctx(model, 512);
  const int windows = 120, seq = 512;
  const PerplexityResult r =
      perplexity(ctx, static_cast<const int32_t*>(ids->data), size_t(ids->numel()), windows, seq, nullptr);
  const double rel = std::fabs(r.ppl - want) / want;
  std::printf("ppl %.6f (reference %.6f), %lld predictions, %.1f s, %.0f tokens/s\n", r.ppl, want,
              (long long)r.tokens, r.ms / 1e3, windows * seq / (r.ms / 1e3));
  check(r.tokens == int64_t(windows) * (seq - 1), "counts windows*(seq-1) = " + std::to_string(r.tokens) + " predictions");
  check(rel <= 1e-3, "ppl " + std::to_string(r.ppl) + " within 0.1% of valid_ppl_fp32 " + std::to_string(want) +
                         " (rel " + fmt(rel) + ")");

  // A cancelled run stops with mixq::Cancelled before evaluating anything.
  std::atomic<bool> cancel{true};
  bool threw = false;
  try {
    perplexity(ctx, static_cast<const int32_t*>(ids->data), size_t(ids->numel()), 2, seq, &cancel);
  } catch (const Cancelled&) {
    threw = true;
  }
  check(threw, "perplexity honours its cancel flag");
  check_throws([&] { perplexity(ctx, static_cast<const int32_t*>(ids->data), 1000, 2, seq, nullptr); },
               {"windows", "1000"}, "too few ids is an error");
  return finish();
}
