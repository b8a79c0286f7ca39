// run_bench on synthetic weights: bytes streamed per decoded token equal the formula from the
// shapes (attention + router + top-k experts per layer + lm_head), and the reported figures are
// consistent with each other; one layer of the Qwen3-Coder-30B-A3B shapes (AWQ, ~1.6 GB) loads through the
// qwen3_moe loader and gives finite logits. No model files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "bench.h"
#include "json.h"
#include "model.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

// Bytes of a Linear [out, in]: bf16, or AWQ int4 g128 (qweight + qzeros int32, scales fp16).
double linear_bytes(double out, double in, bool awq) {
  if (!awq) return out * in * 2;
  return in * out / 2 + (in / 128) * (out / 8) * 4 + (in / 128) * out * 2;
}

// One layer of the Qwen3-Coder-30B-A3B shapes, AWQ g128: the qwen3_moe loader takes the synthetic names and shapes
// (q/k norms, mlp.gate, mlp.experts.E.*_proj), every position routes to 8 distinct experts of 128, the logits are
// finite and not constant, and the bytes per decoded token are those of the top 8 experts.
void qwen3_coder_one_layer() {
  const std::string tag = "synthetic qwen3-coder-30b-a3b awq, 1 layer: ";
  EngineOptions eo;
  eo.threads = 2;
  const std::shared_ptr<Model> model = make_synthetic_model("qwen3-coder-30b-a3b", 1, "awq", eo, 1234);
  const ModelConfig& c = model->config();
  check(c.model_type == "qwen3_moe" && c.hidden_size == 2048 && c.num_attention_heads * c.head_dim == 4096 &&
            c.num_key_value_heads == 4 && c.num_local_experts == 128 && c.num_experts_per_tok == 8 &&
            c.intermediate_size == 768 && c.norm_topk_prob && c.qk_norm && !c.tie_word_embeddings &&
            c.vocab_size == 151936 && c.num_hidden_layers == 1 && c.quant.enabled,
        tag + "config");
  Context ctx(model, 16);
  EvalCapture cap;
  cap.router_logits = true;
  const std::vector<int32_t> prompt = {0, 151935, 42, 7000, 123456, 9};
  ctx.eval(prompt, cap);
  bool distinct = cap.topk_experts.size() == 1 && cap.topk_experts[0].size() == prompt.size() * 8;
  for (size_t t = 0; distinct && t < prompt.size(); ++t) {
    const auto row = cap.topk_experts[0].begin() + std::ptrdiff_t(t * 8);
    const std::set<int32_t> ids(row, row + 8);
    distinct = ids.size() == 8 && *ids.begin() >= 0 && *ids.rbegin() < 128;
  }
  check(distinct, tag + "every position routed to 8 distinct experts of 128");
  auto finite_spread = [](const std::vector<float>& v) {
    bool ok = v.size() == 151936;
    for (float x : v) ok = ok && std::isfinite(x);
    return ok && *std::max_element(v.begin(), v.end()) > *std::min_element(v.begin(), v.end());
  };
  check(finite_spread(cap.logits), tag + "prefill logits finite and not constant");
  EvalCapture step;
  ctx.eval({int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin())}, step);
  check(finite_spread(step.logits), tag + "decode step logits finite and not constant");
  // attention (q 4096×2048, k/v 512×2048, o 2048×4096) + router bf16 + 8 × (gate, up 768×2048; down 2048×768)
  // + lm_head bf16 151936×2048.
  const double attn =
      linear_bytes(4096, 2048, true) + 2 * linear_bytes(512, 2048, true) + linear_bytes(2048, 4096, true);
  const double expert = 2 * linear_bytes(768, 2048, true) + linear_bytes(2048, 768, true);
  const double want = attn + 128.0 * 2048 * 2 + 8 * expert + 151936.0 * 2048 * 2;
  const double got = double(model->weights().decode_bytes_per_token(c.num_experts_per_tok));
  check(got == want, tag + "weight bytes per token " + fmt(got) + " = formula " + fmt(want));
}

}  // namespace

int main() {
  for (const char* weights : {"bf16", "awq"}) {
    const bool awq = std::string(weights) == "awq";
    BenchOptions o;
    o.synthetic = "tiny";
    o.weights = weights;
    o.prefill_tokens = 16;
    o.decode_tokens = 8;
    o.memcpy_bytes = size_t(64) << 20;
    const BenchResult r = run_bench(o);
    const std::string tag = std::string("synthetic tiny ") + weights + ": ";
    // tiny: hidden 256, inter 512, 4 heads / 2 kv heads of 64, 8 experts top-2, vocab 8192, 4 layers.
    const double attn = linear_bytes(256, 256, awq) * 2 + linear_bytes(128, 256, awq) * 2;
    const double router = 8 * 256 * 2;
    const double expert = linear_bytes(512, 256, awq) * 2 + linear_bytes(256, 512, awq);
    const double want = 4 * (attn + router + 2 * expert) + 8192.0 * 256 * 2;
    check(r.weight_bytes_per_token == want, tag + "weight bytes per token " + fmt(r.weight_bytes_per_token) +
                                                " = formula " + fmt(want));
    check(r.prefill_tokens == 16 && r.decode_tokens == 8 && r.prefill_tokens_per_sec > 0 && r.decode_tokens_per_sec > 0,
          tag + "prefill " + fmt(r.prefill_tokens_per_sec) + " tok/s, decode " + fmt(r.decode_tokens_per_sec) + " tok/s");
    double layers = 0;
    for (double ms : r.decode_layer_ms) layers += ms;
    // The breakdown comes from extra steps timed layer by layer (not the throughput loop): present and consistent.
    check(r.decode_layer_ms.size() == 4 && std::fabs(layers / 4 - r.decode_ms_per_layer) < 1e-9 && layers > 0 &&
              r.decode_head_ms > 0 && std::isfinite(layers),
          tag + "per-layer ms (" + fmt(r.decode_ms_per_layer) + ") and head ms measured for every layer");
    check(r.memcpy_gbps > 0.1 && std::fabs(r.bandwidth_ratio - r.weight_gbps / r.memcpy_gbps) < 1e-12 &&
              std::fabs(r.weight_gbps - r.weight_bytes_per_token * r.decode_tokens_per_sec / 1e9) < 1e-9,
          tag + "ratio = weight GB/s / memcpy GB/s = " + fmt(r.bandwidth_ratio));
    check(r.peak_rss_bytes > want, tag + "peak RSS " + fmt(r.peak_rss_bytes) + " bytes");
    const JsonValue j = parse_json(bench_result_json(r), "bench json");
    check(j.find("decodeTokensPerSec") && j.find("memcpyGBps") && j.find("bandwidthRatio") && j.find("peakRssBytes") &&
              j.find("decodeMsPerLayer")->as_number() == j.find("decodeMsPerLayer")->as_number(),
          tag + "JSON output parses and carries the NativeBenchResult fields");
  }
  check_throws([] { BenchOptions o; o.synthetic = "gpt-5"; run_bench(o); }, {"gpt-5", "qwen3-coder-30b-a3b"},
               "unknown synthetic model is an error listing the known ones");
  qwen3_coder_one_layer();
  return finish();
}
