// AWQ benchmarks (plain C++, prints one JSON object per mode):
//
//   awq_bench decode [--layers 2] [--prefill 32] [--decode 16] [--threads N]
//       int4 g128 decode on synthetic Mixtral-8x7B shapes (random packed weights built in memory; router,
//       embeddings, lm_head bf16), against a large memcpy measured in the same run.
//   awq_bench model DIR [--threads N]
//       the engine's run_bench on a model folder (e.g. the fixture's AWQ version).
//   awq_bench quant-layer [--samples 1,2] [--experts 8] [--threads N]
//       quantize_layer (AWQ, g128) on one synthetic Mixtral-8x7B layer with S × 512 calibration tokens for each S
//       given; each phase's time is fitted as a + b·S with a, b ≥ 0 (the GEMMs of the forward and of the
//       scale searches grow with the tokens; fake quantization, clipping on ≤ 512 tokens and packing do not)
//       and the sum is extrapolated to 128 × 512 tokens and 32 layers.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "awq/awq_pack.h"
#include "bench.h"
#include "engine.h"
#include "model.h"
#include "quant/quantize.h"
#include "tensor.h"
#include "thread_pool.h"

using namespace mixq;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

ModelConfig mixtral_config(int layers) {
  ModelConfig c;
  c.model_type = "mixtral";
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.rope_theta = 1e6;
  c.rms_norm_eps = 1e-5;
  c.num_local_experts = 8;
  c.num_experts_per_tok = 2;
  c.vocab_size = 32000;
  c.max_position_embeddings = 32768;
  c.quant.enabled = true;
  c.quant.quant_method = "awq";
  c.quant.version = "gemm";
  c.quant.bits = 4;
  c.quant.group_size = 128;
  return c;
}

// Owns synthetic tensor bytes; TensorViews point into them.
struct Store {
  std::vector<std::unique_ptr<uint8_t[]>> buffers;
  std::map<std::string, TensorView> tensors;

  void* add(const std::string& name, DType dt, std::vector<int64_t> shape) {
    TensorView t;
    t.name = name;
    t.file = "synthetic";
    t.dtype = dt;
    t.shape = std::move(shape);
    t.nbytes = size_t(t.numel()) * dtype_size(dt);
    buffers.emplace_back(new uint8_t[t.nbytes]);
    t.data = buffers.back().get();
    tensors[name] = t;
    return buffers.back().get();
  }
  void bf16(const std::string& name, std::vector<int64_t> shape, float scale, uint64_t seed, ThreadPool& pool) {
    auto* p = static_cast<uint16_t*>(add(name, DType::BF16, shape));
    const int64_t n = tensors[name].numel();
    pool.parallel_for(n / 65536 + 1, [&](int64_t b, int64_t e) {
      uint64_t s = seed * 0x9E3779B97F4A7C15ull + uint64_t(b) + 1;
      for (int64_t i = b * 65536; i < std::min(n, e * 65536); ++i) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        p[i] = f32_to_bf16((float(s >> 40) / 16777216.0f * 2.0f - 1.0f) * scale);
      }
    });
  }
  // Random codes, zero 8, scale chosen so W has std ≈ 1/sqrt(in) (activations stay O(1)).
  void awq(const std::string& prefix, int64_t out, int64_t in, uint64_t seed, ThreadPool& pool) {
    const int64_t groups = in / 128;
    auto* qw = static_cast<uint32_t*>(add(prefix + ".qweight", DType::I32, {in, out / 8}));
    auto* qz = static_cast<uint32_t*>(add(prefix + ".qzeros", DType::I32, {groups, out / 8}));
    auto* sc = static_cast<uint16_t*>(add(prefix + ".scales", DType::F16, {groups, out}));
    const int64_t n = in * out / 8;
    pool.parallel_for(n / 65536 + 1, [&](int64_t b, int64_t e) {
      uint64_t s = seed * 0xD1B54A32D192ED03ull + uint64_t(b) + 1;
      for (int64_t i = b * 65536; i < std::min(n, e * 65536); ++i) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        qw[i] = uint32_t(s >> 16);
      }
    });
    for (int64_t i = 0; i < groups * out / 8; ++i) qz[i] = 0x88888888u;
    const uint16_t s16 = f32_to_f16(1.0f / (4.6f * std::sqrt(float(in))));
    for (int64_t i = 0; i < groups * out; ++i) sc[i] = s16;
  }
};

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 2; i + 1 < argc; ++i)
    if (argv[i] == "--" + name) return argv[i + 1];
  return fallback;
}

int decode_mode(int argc, char** argv) {
  const int layers = std::atoi(arg(argc, argv, "layers", "2").c_str());
  const int prefill = std::atoi(arg(argc, argv, "prefill", "32").c_str());
  const int decode = std::atoi(arg(argc, argv, "decode", "16").c_str());
  const int threads = std::atoi(arg(argc, argv, "threads", "0").c_str());
  const ModelConfig c = mixtral_config(layers);
  ThreadPool pool(threads);
  auto store = std::make_shared<Store>();
  const int64_t h = c.hidden_size, it = c.intermediate_size, hd = c.head_dim;
  uint64_t seed = 1;
  const auto t_build = Clock::now();
  store->bf16("model.embed_tokens.weight", {c.vocab_size, h}, 1.0f, ++seed, pool);
  store->bf16("lm_head.weight", {c.vocab_size, h}, 1.0f / std::sqrt(float(h)), ++seed, pool);
  auto ones = [&](const std::string& n) {
    auto* p = static_cast<uint16_t*>(store->add(n, DType::BF16, {h}));
    for (int64_t i = 0; i < h; ++i) p[i] = f32_to_bf16(1.0f);
  };
  ones("model.norm.weight");
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ones(p + "input_layernorm.weight");
    ones(p + "post_attention_layernorm.weight");
    store->awq(p + "self_attn.q_proj", c.num_attention_heads * hd, h, ++seed, pool);
    store->awq(p + "self_attn.k_proj", c.num_key_value_heads * hd, h, ++seed, pool);
    store->awq(p + "self_attn.v_proj", c.num_key_value_heads * hd, h, ++seed, pool);
    store->awq(p + "self_attn.o_proj", h, c.num_attention_heads * hd, ++seed, pool);
    store->bf16(p + "block_sparse_moe.gate.weight", {c.num_local_experts, h}, 1.0f / std::sqrt(float(h)), ++seed, pool);
    for (int e = 0; e < c.num_local_experts; ++e) {
      const std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      store->awq(ep + "w1", it, h, ++seed, pool);
      store->awq(ep + "w3", it, h, ++seed, pool);
      store->awq(ep + "w2", h, it, ++seed, pool);
    }
  }
  const double build_ms = ms_since(t_build);
  TensorLookup lookup = [&](const std::string& n) -> const TensorView* {
    auto f = store->tensors.find(n);
    return f == store->tensors.end() ? nullptr : &f->second;
  };
  EngineOptions eo;
  eo.threads = threads;
  ModelWeights w = build_model_weights(c, lookup, "synthetic mixtral-8x7b awq");
  w.storage = store;
  auto model = make_model(c, std::move(w), eo, "synthetic:mixtral-8x7b-awq");
  Context ctx(model, prefill + decode + 8);
  std::mt19937_64 rng(7);
  std::vector<int32_t> prompt(static_cast<size_t>(prefill));
  for (auto& t : prompt) t = int32_t(rng() % uint64_t(c.vocab_size));
  EvalCapture cap;
  ctx.eval({prompt[0]}, cap);  // warm-up
  ctx.truncate(0);
  auto t0 = Clock::now();
  ctx.eval(prompt, cap);
  const double prefill_ms = ms_since(t0);
  cap.timing = true;
  std::vector<double> layer_ms(static_cast<size_t>(layers), 0.0);
  double head_ms = 0;
  int32_t tok = 1;
  t0 = Clock::now();
  for (int i = 0; i < decode; ++i) {
    ctx.eval({tok}, cap);
    for (int l = 0; l < layers; ++l) layer_ms[size_t(l)] += cap.layer_ms[size_t(l)] / decode;
    head_ms += cap.head_ms / decode;
    tok = int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin());
  }
  const double decode_ms = ms_since(t0);
  const double tps = decode / (decode_ms * 1e-3);
  const double bytes = double(model->weights().decode_bytes_per_token(c.num_experts_per_tok));
  double layer_bytes = 0;
  {
    const LayerWeights& L = model->weights().layers[0];
    layer_bytes = double(L.q->weight_bytes() + L.k->weight_bytes() + L.v->weight_bytes() + L.o->weight_bytes() +
                         L.gate->weight_bytes()) +
                  2.0 * double(L.experts[0].w1->weight_bytes() + L.experts[0].w2->weight_bytes() + L.experts[0].w3->weight_bytes());
  }
  double mean_layer = 0;
  for (double v : layer_ms) mean_layer += v / layers;
  const double peak = double(peak_rss_bytes());
  const double memcpy_gbps = measure_memcpy_gbps(static_cast<size_t>(1) << 30, model->pool().size());
  std::printf(
      "{\"mode\":\"decode\",\"model\":\"synthetic mixtral-8x7b awq-int4-g128\",\"layers\":%d,\"threads\":%d,"
      "\"buildMs\":%.0f,\"prefillTokens\":%d,\"prefillTokensPerSec\":%.2f,\"decodeTokens\":%d,\"decodeTokensPerSec\":%.3f,"
      "\"decodeMsPerLayer\":%.3f,\"decodeHeadMs\":%.3f,\"layerWeightBytesPerToken\":%.0f,\"layerWeightGBps\":%.2f,"
      "\"weightBytesPerToken\":%.0f,\"weightGBps\":%.2f,\"memcpyGBps\":%.2f,\"bandwidthRatio\":%.3f,"
      "\"layerBandwidthRatio\":%.3f,\"extrapolated32LayerTokensPerSec\":%.3f,\"peakRssBytes\":%.0f}\n",
      layers, model->pool().size(), build_ms, prefill, prefill / (prefill_ms * 1e-3), decode, tps, mean_layer, head_ms,
      layer_bytes, layer_bytes / (mean_layer * 1e-3) / 1e9, bytes, bytes * tps / 1e9, memcpy_gbps,
      bytes * tps / 1e9 / memcpy_gbps, layer_bytes / (mean_layer * 1e-3) / 1e9 / memcpy_gbps,
      1000.0 / (32 * mean_layer + head_ms), peak);
  return 0;
}

int model_mode(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: awq_bench model DIR [--threads N]\n");
    return 2;
  }
  BenchOptions o;
  o.model_dir = argv[2];
  o.threads = std::atoi(arg(argc, argv, "threads", "0").c_str());
  std::printf("%s\n", bench_result_json(run_bench(o)).c_str());
  return 0;
}

// One synthetic Mixtral-8x7B layer in f32 (w_t layout), normal-ish weights with a few outlier channels.
quant::LayerF32 synthetic_layer(const ModelConfig& c, int experts, ThreadPool& pool) {
  const int64_t d = c.hidden_size, inter = c.intermediate_size;
  const int64_t qd = int64_t(c.num_attention_heads) * c.head_dim, kvd = int64_t(c.num_key_value_heads) * c.head_dim;
  auto rnd = [&](int64_t in, int64_t out, uint64_t seed) {
    std::vector<float> w(static_cast<size_t>(in * out));
    const float scale = 1.0f / std::sqrt(float(in));
    pool.parallel_for(in, [&](int64_t b, int64_t e) {
      uint64_t s = seed * 0x9E3779B97F4A7C15ull + uint64_t(b) + 1;
      for (int64_t i = b; i < e; ++i)
        for (int64_t o = 0; o < out; ++o) {
          s ^= s << 13; s ^= s >> 7; s ^= s << 17;
          w[size_t(i * out + o)] = (float(s >> 40) / 16777216.0f * 2.0f - 1.0f) * 1.7f * scale;
        }
    });
    return w;
  };
  quant::LayerF32 w;
  w.attn_norm.assign(static_cast<size_t>(d), 1.0f);
  w.post_norm.assign(static_cast<size_t>(d), 1.0f);
  uint64_t seed = 100;
  w.q_t = rnd(d, qd, ++seed);
  w.k_t = rnd(d, kvd, ++seed);
  w.v_t = rnd(d, kvd, ++seed);
  w.o_t = rnd(qd, d, ++seed);
  w.gate_t = rnd(d, c.num_local_experts, ++seed);
  w.experts.resize(static_cast<size_t>(experts));
  for (auto& e : w.experts) {
    e.w1_t = rnd(d, inter, ++seed);
    e.w3_t = rnd(d, inter, ++seed);
    e.w2_t = rnd(inter, d, ++seed);
  }
  return w;
}

int quant_layer_mode(int argc, char** argv) {
  const int threads = std::atoi(arg(argc, argv, "threads", "0").c_str());
  const int experts = std::atoi(arg(argc, argv, "experts", "8").c_str());
  std::vector<int> samples_list;
  {
    std::stringstream ss(arg(argc, argv, "samples", "1,2"));
    std::string item;
    while (std::getline(ss, item, ',')) samples_list.push_back(std::atoi(item.c_str()));
  }
  ModelConfig c = mixtral_config(1);
  c.num_local_experts = experts;
  ThreadPool pool(threads);
  const int64_t L = 512, d = c.hidden_size;
  std::vector<double> totals;
  std::vector<std::vector<double>> phase_runs;
  std::string runs;
  for (int S : samples_list) {
    quant::LayerF32 w = synthetic_layer(c, experts, pool);
    std::vector<float> h(static_cast<size_t>(S * L * d));
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& v : h) v = nd(rng);
    for (int64_t t = 0; t < S * L; t += 97) h[size_t(t * d + 17)] = 40.0f;  // an outlier channel, as LLMs have
    quant::LayerQuantOptions lo;
    lo.awq = true;
    lo.spec.group = 128;
    quant::LayerQuantized lq;
    const auto t0 = Clock::now();
    quant::quantize_layer(c, w, h.data(), S, L, lo, &lq, pool);
    const double s = ms_since(t0) / 1e3;
    totals.push_back(s);
    phase_runs.push_back(lq.phase_seconds);
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%s{\"samples\":%d,\"tokens\":%lld,\"seconds\":%.2f,\"phases\":{\"forward\":%.2f,\"searchAttn\":%.2f,"
                  "\"searchMoe\":%.2f,\"searchExperts\":%.2f,\"clip\":%.2f,\"pack\":%.2f}}",
                  runs.empty() ? "" : ",", S, (long long)(S * L), s, lq.phase_seconds[0], lq.phase_seconds[1],
                  lq.phase_seconds[2], lq.phase_seconds[3], lq.phase_seconds[4], lq.phase_seconds[5]);
    runs += buf;
    std::fprintf(stderr, "samples %d: %.1f s\n", S, s);
  }
  // Per phase: t = a + b·S with a, b ≥ 0 (noise on a shared machine can make a naive fit negative).
  double a = 0, b = 0;
  if (phase_runs.size() >= 2) {
    const double s0 = samples_list.front(), s1 = samples_list.back();
    for (size_t p = 0; p < phase_runs.front().size(); ++p) {
      const double t0 = phase_runs.front()[p], t1 = phase_runs.back()[p];
      double bp = std::max(0.0, (t1 - t0) / (s1 - s0)), ap = t1 - bp * s1;
      if (ap < 0) {
        ap = 0;
        bp = t1 / s1;
      }
      a += ap;
      b += bp;
    }
  } else {
    b = totals[0] / samples_list[0];  // everything assumed proportional to the tokens: an upper bound
  }
  const double per_layer_128 = a + b * 128.0;
  std::printf(
      "{\"mode\":\"quant-layer\",\"shape\":\"mixtral-8x7b\",\"experts\":%d,\"threads\":%d,\"seqLen\":512,\"runs\":[%s],"
      "\"fitFixedSeconds\":%.2f,\"fitSecondsPerSample\":%.3f,\"extrapolatedLayerSeconds128x512\":%.1f,"
      "\"extrapolated32LayersHours\":%.2f,\"peakRssBytes\":%.0f}\n",
      experts, pool.size(), runs.c_str(), a, b, per_layer_128, per_layer_128 * 32 / 3600.0, double(peak_rss_bytes()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "decode") return decode_mode(argc, argv);
    if (mode == "model") return model_mode(argc, argv);
    if (mode == "quant-layer") return quant_layer_mode(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "awq_bench: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: awq_bench decode|model DIR|quant-layer [flags] (see the header of awq_bench.cpp)\n");
  return 2;
}
