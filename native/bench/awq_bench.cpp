// AWQ benchmarks (plain C++, prints one JSON object per mode):
//
//   awq_bench decode [--layers 2] [--prefill 32] [--decode 16] [--threads N]
//       int4 g128 decode on synthetic Mixtral-8x7B shapes (run_bench --synthetic mixtral-8x7b --weights awq: random
//       packed weights built in memory; router, embeddings, lm_head bf16), against a large memcpy measured in the
//       same run, with the per-layer bytes and bandwidth ratio.
//   awq_bench gemv [--in 4096] [--out 14336] [--group 128] [--threads N] [--isa auto|avx512|avx2|scalar]
//                  [--nibble auto|convert|denormal] [--tokens 1] [--reps 64] [--mib 512] [--pages huge|4k]
//       the int4 GEMV kernel alone at one shape (x of --tokens rows; more than 8 go through the tiled GEMM): split
//       over the pool, one matrix per thread, and L2-resident (arithmetic ceiling), against memcpy and a read-only
//       sweep measured in the same run. --pages 4k: the weights on 4 KiB pages, as a mmapped checkpoint's are.
//   awq_bench model DIR [--threads N]
//       the engine's run_bench on a model folder (e.g. the fixture's AWQ version).
//   awq_bench quant-layer [--samples 1,2] [--experts 8] [--threads N]
//       quantize_layer (AWQ, g128, the default pipeline: error-feedback rounding, quantized propagation; searchExperts
//       includes w2's clip and rounding, pack the rounding of the rest) on one synthetic Mixtral-8x7B layer with S × 512 calibration tokens for each S
//       given; each phase's time is fitted as a + b·S with a, b ≥ 0 (the GEMMs of the forward and of the
//       scale searches grow with the tokens; fake quantization, clipping on ≤ 512 tokens and packing do not)
//       and the sum is extrapolated to 128 × 512 tokens and 32 layers.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "awq/w4a16_cpu.h"
#include "bench.h"
#include "engine.h"
#include "error.h"
#include "model.h"
#include "quant/quantize.h"
#include "tensor.h"
#include "thread_pool.h"

using namespace mixq;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Mixtral-8x7B shapes with an AWQ g128 quantization_config (the synthetic store's names and shapes).
ModelConfig mixtral_awq_config(int layers) {
  ModelConfig c = synthetic_config("mixtral-8x7b", layers);
  c.quant.enabled = true;
  c.quant.quant_method = "awq";
  c.quant.version = "gemm";
  c.quant.bits = 4;
  c.quant.group_size = 128;
  return c;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 2; i + 1 < argc; ++i)
    if (argv[i] == "--" + name) return argv[i + 1];
  return fallback;
}

// The engine's own benchmark (run_bench) on synthetic AWQ Mixtral layers, plus per-layer figures: a layer's bytes
// per decoded token are the total minus the bf16 lm_head, over the layer count.
int decode_mode(int argc, char** argv) {
  BenchOptions o;
  o.synthetic = "mixtral-8x7b";
  o.weights = "awq";
  o.layers = std::atoi(arg(argc, argv, "layers", "2").c_str());
  o.prefill_tokens = std::atoi(arg(argc, argv, "prefill", "32").c_str());
  o.decode_tokens = std::atoi(arg(argc, argv, "decode", "16").c_str());
  o.threads = std::atoi(arg(argc, argv, "threads", "0").c_str());
  const BenchResult r = run_bench(o);
  const ModelConfig c = synthetic_config(o.synthetic, o.layers);
  const double lm_head_bytes = double(c.vocab_size) * double(c.hidden_size) * 2.0;
  const double layer_bytes = (r.weight_bytes_per_token - lm_head_bytes) / c.num_hidden_layers;
  const double layer_gbps = layer_bytes / (r.decode_ms_per_layer * 1e-3) / 1e9;
  std::printf(
      "{\"mode\":\"decode\",\"model\":\"synthetic mixtral-8x7b awq-int4-g128\",\"layers\":%d,\"threads\":%d,"
      "\"description\":\"%s\",\"prefillTokensPerSec\":%.2f,\"decodeTokensPerSec\":%.3f,\"decodeMsPerLayer\":%.3f,"
      "\"decodeHeadMs\":%.3f,\"layerWeightBytesPerToken\":%.0f,\"layerWeightGBps\":%.2f,\"weightBytesPerToken\":%.0f,"
      "\"weightGBps\":%.2f,\"memcpyGBps\":%.2f,\"bandwidthRatio\":%.3f,\"layerBandwidthRatio\":%.3f,"
      "\"extrapolated32LayerTokensPerSec\":%.3f,\"peakRssBytes\":%.0f}\n",
      c.num_hidden_layers, r.threads, r.description.c_str(), r.prefill_tokens_per_sec, r.decode_tokens_per_sec,
      r.decode_ms_per_layer, r.decode_head_ms, layer_bytes, layer_gbps, r.weight_bytes_per_token, r.weight_gbps,
      r.memcpy_gbps, r.bandwidth_ratio, layer_gbps / r.memcpy_gbps, 1000.0 / (32 * r.decode_ms_per_layer + r.decode_head_ms),
      r.peak_rss_bytes);
  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Best-of-`repeats` read-only bandwidth: every 64-bit word of `bytes` summed, split over the pool, GB/s.
double measure_read_gbps(size_t bytes, ThreadPool& pool, int repeats = 5) {
  const size_t words = bytes / 8;
  std::unique_ptr<uint64_t[]> buf(new uint64_t[words]);
  const int64_t chunks = pool.size();
  pool.parallel_for(chunks, [&](int64_t b, int64_t e) {
    std::fill(buf.get() + words * size_t(b) / size_t(chunks), buf.get() + words * size_t(e) / size_t(chunks), 1);
  });
  double best = 1e30;
  std::vector<uint64_t> sums(size_t(chunks), 0);
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    pool.parallel_for(chunks, [&](int64_t b, int64_t e) {
      const size_t lo = words * size_t(b) / size_t(chunks), hi = words * size_t(e) / size_t(chunks);
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (size_t i = lo; i + 4 <= hi; i += 4) {
        s0 += buf[i];
        s1 += buf[i + 1];
        s2 += buf[i + 2];
        s3 += buf[i + 3];
      }
      sums[size_t(b)] += s0 + s1 + s2 + s3;
    });
    best = std::min(best, ms_since(t0));
  }
  if (sums[0] == 42) std::fprintf(stderr, " ");  // keeps the sums observable
  return double(bytes) / (best * 1e-3) / 1e9;
}

// One int4 GEMV shape (decode: n = 1) on its own, three ways:
//   pool:      one matrix at a time split over all threads (attention projections in decode);
//   perThread: one matrix per thread at once, each single-threaded (the MoE decode runs one routed expert per thread);
//   cached:    one small matrix resident in L2, one thread (the kernel's arithmetic ceiling, no DRAM).
// Streaming cases rotate over copies filling --mib MiB (≫ L3) so every call reads DRAM. Bytes counted per call are
// the checkpoint's (qweight + qzeros + fp16 scales), as weight_bytes() counts them.
int gemv_mode(int argc, char** argv) {
  const int64_t in = std::atoll(arg(argc, argv, "in", "4096").c_str());
  const int64_t out = std::atoll(arg(argc, argv, "out", "14336").c_str());
  const int group = std::atoi(arg(argc, argv, "group", "128").c_str());
  const int threads = std::atoi(arg(argc, argv, "threads", "0").c_str());
  const int reps = std::atoi(arg(argc, argv, "reps", "64").c_str());
  const int64_t tokens = std::atoll(arg(argc, argv, "tokens", "1").c_str());
  const size_t mib = size_t(std::atoll(arg(argc, argv, "mib", "512").c_str()));
  const std::string isa_name = arg(argc, argv, "isa", "auto");
  awq::W4Isa isa = awq::W4Isa::Auto;
  for (awq::W4Isa i : awq::w4_available_isas())
    if (isa_name == awq::w4_isa_name(i)) isa = i;
  if (isa_name != "auto" && isa == awq::W4Isa::Auto) throw Error("gemv: kernel \"" + isa_name + "\" not available here");
  const std::string nibble_name = arg(argc, argv, "nibble", "auto");
  awq::W4Nibble nibble = awq::W4Nibble::Auto;
  for (awq::W4Nibble n : {awq::W4Nibble::Convert, awq::W4Nibble::Denormal})
    if (nibble_name == awq::w4_nibble_name(n)) nibble = n;
  if (nibble_name != "auto" && nibble == awq::W4Nibble::Auto) throw Error("gemv: unknown --nibble " + nibble_name);
  ThreadPool pool(threads);

  struct Matrix {
    awq::W4A16Weights w;
    std::vector<float> scales_tiled;
    size_t bytes = 0;
  };
  SyntheticStore store;
  store.threads = pool.size();
  const std::string pages = arg(argc, argv, "pages", "huge");
  if (pages != "huge" && pages != "4k") throw Error("gemv: --pages is huge or 4k, not " + pages);
  store.huge_pages = pages == "huge";
  auto make = [&](const std::string& name, int64_t mi, int64_t mo) {
    store.add_linear(name, mo, mi, 1.0f / std::sqrt(float(mi)), group);
    const TensorView *qw = store.find(name + ".qweight"), *qz = store.find(name + ".qzeros"),
                     *sc = store.find(name + ".scales");
    Matrix m;
    m.scales_tiled = awq::make_tiled_scales(static_cast<const uint16_t*>(sc->data), false, mi / group, mo);
    m.w = awq::W4A16Weights{mi, mo, group, static_cast<const int32_t*>(qw->data), static_cast<const int32_t*>(qz->data),
                            nullptr};
    m.bytes = qw->nbytes + qz->nbytes + sc->nbytes;
    return m;
  };
  std::vector<Matrix> copies;
  const size_t one = size_t(in) * size_t(out) / 2;
  const size_t count = std::max<size_t>(2 * size_t(pool.size()), (mib << 20) / one);
  for (size_t i = 0; i < count; ++i) copies.push_back(make("m" + std::to_string(i), in, out));
  for (Matrix& m : copies) m.w.scales_tiled = m.scales_tiled.data();  // after the vector stopped growing
  Matrix small = make("cached", 1024, 1024);
  small.w.scales_tiled = small.scales_tiled.data();

  std::vector<float> x(static_cast<size_t>(tokens * in)), y(static_cast<size_t>(tokens * out * pool.size()));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1f * float(i));
  // Warm-up: fault every copy in and let the pool spin up.
  for (const Matrix& m : copies) awq::w4a16_forward(m.w, x.data(), tokens, y.data(), pool, isa, nibble);

  std::vector<double> pool_ms, thread_ms, cached_ms;
  for (int r = 0; r < reps; ++r) {
    const Matrix& m = copies[size_t(r) % copies.size()];
    const auto t0 = Clock::now();
    awq::w4a16_forward(m.w, x.data(), tokens, y.data(), pool, isa, nibble);
    pool_ms.push_back(ms_since(t0));
  }
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    pool.parallel_for(pool.size(), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {  // nested forward runs inline on this thread
        const Matrix& m = copies[(size_t(r) * size_t(pool.size()) + size_t(t)) % copies.size()];
        awq::w4a16_forward(m.w, x.data(), tokens, y.data() + t * tokens * out, pool, isa, nibble);
      }
    });
    thread_ms.push_back(ms_since(t0));
  }
  {
    ThreadPool single(1);
    std::vector<float> ys(static_cast<size_t>(tokens * 1024));
    for (int r = 0; r < 4 * reps; ++r) {
      const auto t0 = Clock::now();
      awq::w4a16_forward(small.w, x.data(), tokens, ys.data(), single, isa, nibble);
      cached_ms.push_back(ms_since(t0));
    }
  }
  const double bytes = double(copies[0].bytes);
  const double pool_gbps = bytes / (median(pool_ms) * 1e-3) / 1e9;
  const double thread_gbps = bytes * pool.size() / (median(thread_ms) * 1e-3) / 1e9;
  const double cached_gbps = double(small.bytes) / (median(cached_ms) * 1e-3) / 1e9;
  const double memcpy_gbps = measure_memcpy_gbps(size_t(1) << 30, pool.size());
  const double read_gbps = measure_read_gbps(size_t(1) << 30, pool);
  std::printf(
      "{\"mode\":\"gemv\",\"pages\":\"%s\",\"tokens\":%lld,\"in\":%lld,\"out\":%lld,\"group\":%d,\"kernel\":\"%s/%s\",\"threads\":%d,\"copies\":%zu,"
      "\"bytesPerCall\":%.0f,\"poolMsMedian\":%.3f,\"poolGBps\":%.2f,\"perThreadMsMedian\":%.3f,\"perThreadGBps\":%.2f,"
      "\"cachedUsMedian\":%.2f,\"cachedGBps1Thread\":%.2f,\"cachedWeightsPerNs1Thread\":%.2f,"
      "\"memcpyGBps\":%.2f,\"readGBps\":%.2f,\"poolRatio\":%.3f,\"perThreadRatio\":%.3f}\n",
      pages.c_str(), (long long)tokens, (long long)in, (long long)out, group, awq::w4_isa_name(isa == awq::W4Isa::Auto ? awq::w4_best_isa() : isa),
      awq::w4_nibble_name(nibble == awq::W4Nibble::Auto ? awq::w4_nibble_route() : nibble),
      pool.size(), copies.size(), bytes, median(pool_ms), pool_gbps, median(thread_ms), thread_gbps,
      median(cached_ms) * 1e3, cached_gbps, 1024.0 * 1024.0 / (median(cached_ms) * 1e6), memcpy_gbps, read_gbps,
      pool_gbps / memcpy_gbps, thread_gbps / memcpy_gbps);
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
  ModelConfig c = mixtral_awq_config(1);
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
                  "\"searchMoe\":%.2f,\"searchExperts\":%.2f,\"clip\":%.2f,\"pack\":%.2f,\"propagate\":%.2f}}",
                  runs.empty() ? "" : ",", S, (long long)(S * L), s, lq.phase_seconds[0], lq.phase_seconds[1],
                  lq.phase_seconds[2], lq.phase_seconds[3], lq.phase_seconds[4], lq.phase_seconds[5],
                  lq.phase_seconds[6]);
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
    if (mode == "gemv") return gemv_mode(argc, argv);
    if (mode == "model") return model_mode(argc, argv);
    if (mode == "quant-layer") return quant_layer_mode(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "awq_bench: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: awq_bench decode|gemv|model DIR|quant-layer [flags] (see the header of awq_bench.cpp)\n");
  return 2;
}
