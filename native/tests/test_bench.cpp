// run_bench on synthetic weights: bytes streamed per decoded token equal the formula from the
// shapes (attention + router + top-k experts per layer + lm_head), and the reported figures are
// consistent with each other. Small and fast; no model files.
#include <cmath>
#include <cstdio>

#include "bench.h"
#include "json.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

// Bytes of a Linear [out, in]: bf16, or AWQ int4 g128 (qweight + qzeros int32, scales fp16).
double linear_bytes(double out, double in, bool awq) {
  if (!awq) return out * in * 2;
  return in * out / 2 + (in / 128) * (out / 8) * 4 + (in / 128) * out * 2;
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
  check_throws([] { BenchOptions o; o.synthetic = "gpt-5"; run_bench(o); }, {"gpt-5"}, "unknown synthetic model is an error");
  return finish();
}
