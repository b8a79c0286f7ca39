// Ops against plain loops: dense Linear SIMD kernels vs the scalar reference over a table of
// shapes × dtypes; fp16/bf16 conversions; RMSNorm; RoPE; router softmax/top-k; sliding-window
// attention vs brute force; sampling; the JSON parser; the thread pool. No model files needed.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <clocale>
#include <cstring>
#include <numeric>
#include <random>

#include "backend.h"
#include "cpu_features.h"
#include "json.h"
#include "linear_dense.h"
#include "attention_cpu.h"
#include "ops/attention.h"
#include "ops/moe.h"
#include "ops/router.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "sampling.h"
#include "test_util.h"
#include "thread_pool.h"

using namespace mixq;
using namespace mixq_test;

namespace {

std::mt19937 rng(1234);
std::vector<float> randn(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Weight bytes [out, in] of dtype dt from f32 values.
std::vector<uint8_t> encode(const std::vector<float>& w, DType dt) {
  std::vector<uint8_t> b(w.size() * dtype_size(dt));
  for (size_t i = 0; i < w.size(); ++i) {
    if (dt == DType::F32) std::memcpy(&b[i * 4], &w[i], 4);
    else {
      const uint16_t h = dt == DType::BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
      std::memcpy(&b[i * 2], &h, 2);
    }
  }
  return b;
}

void test_dense(ThreadPool& pool) {
  const int64_t ins[] = {1, 7, 16, 17, 33, 64, 256, 1000};
  const int64_t outs[] = {1, 3, 5, 16, 17, 67};
  const int64_t ns[] = {1, 2, 3, 4, 5, 9};
  const DType dts[] = {DType::BF16, DType::F16, DType::F32};
  std::vector<DenseIsa> isas = {DenseIsa::Avx2, DenseIsa::Avx512};
  for (DenseIsa isa : isas) {
    if (!dense_isa_supported(isa)) {
      std::printf("note: %s not supported on this CPU, not tested\n", dense_isa_name(isa));
      continue;
    }
    for (DType dt : dts) {
      double worst = 0;
      int cases = 0;
      bool threads_equal = true;
      for (int64_t in : ins)
        for (int64_t out : outs)
          for (int64_t n : ns) {
            const std::vector<float> wf = randn(size_t(out * in), 0.05f);
            const std::vector<uint8_t> wb = encode(wf, dt);
            const std::vector<float> x = randn(size_t(n * in));
            TensorView tv;
            tv.name = "w.weight";
            tv.dtype = dt;
            tv.shape = {out, in};
            tv.data = wb.data();
            tv.nbytes = wb.size();
            auto ref = make_dense_linear(tv, DenseIsa::Scalar);
            auto fast = make_dense_linear(tv, isa);
            std::vector<float> yr(size_t(n * out)), yf(yr.size()), y1(yr.size());
            ref->forward(x.data(), n, yr.data(), pool);
            fast->forward(x.data(), n, yf.data(), pool);
            // Errors are relative to the magnitude of the terms (Σ|w·x|), not of a possibly cancelling sum.
            for (int64_t t = 0; t < n; ++t)
              for (int64_t o = 0; o < out; ++o) {
                double mag = 0;
                std::vector<float> row(static_cast<size_t>(in));
                ref->weight_row(o, row.data());
                for (int64_t i = 0; i < in; ++i) mag += std::fabs(double(row[size_t(i)]) * x[size_t(t * in + i)]);
                const double e = std::fabs(double(yf[size_t(t * out + o)]) - yr[size_t(t * out + o)]) / (mag + 1e-30);
                worst = std::max(worst, e);
              }
            // Single-threaded run of the fast kernel gives bit-identical results (split is by rows only).
            dense_rows(isa, wb.data(), dt, in, out, 0, out, x.data(), n, y1.data());
            threads_equal &= y1 == yf;
            ++cases;
          }
      check(worst < 2e-6, std::string("dense ") + dense_isa_name(isa) + " " + dtype_name(dt) + " vs scalar over " +
                              std::to_string(cases) + " shapes: worst error/Σ|terms| " + fmt(worst));
      check(threads_equal, std::string("dense ") + dense_isa_name(isa) + " " + dtype_name(dt) +
                               ": multi-threaded forward equals one-thread rows bit for bit");
    }
  }
}

void test_conversions() {
  int bad_bf16 = 0, bad_f16 = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float fb = bf16_to_f32(uint16_t(h));
    if (!std::isnan(fb) && f32_to_bf16(fb) != h) ++bad_bf16;
    const float fh = f16_to_f32(uint16_t(h));
    if (!std::isnan(fh) && f32_to_f16(fh) != h) ++bad_f16;
  }
  check(bad_bf16 == 0, "bf16 → f32 → bf16 round-trips all 65536 values");
  check(bad_f16 == 0, "f16 → f32 → f16 round-trips all 65536 values (subnormals included)");
  check(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0x0001) == std::ldexp(1.0f, -24) && f16_to_f32(0xfbff) == -65504.0f,
        "f16 decodes 1.0, the smallest subnormal and -65504");
  // Round to nearest even: 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125 → even (1.0);
  // 1 + 3·2^-8 is halfway between 1.0078125 and 1.015625 → even (1.015625).
  check(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80 && f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82,
        "f32 → bf16 rounds half to even");
  check(f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(65519.0f) == 0x7bff, "f32 → f16 overflows to inf at 65520");
}

void test_rms_norm() {
  const int64_t n = 3, d = 96;
  const std::vector<float> x = randn(size_t(n * d)), w = randn(size_t(d));
  std::vector<float> y(x.size());
  rms_norm(x.data(), w.data(), n, d, 1e-5f, y.data());
  double worst = 0;
  for (int64_t t = 0; t < n; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[size_t(t * d + i)]) * x[size_t(t * d + i)];
    const double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int64_t i = 0; i < d; ++i) {
      const double want = w[size_t(i)] * x[size_t(t * d + i)] * inv;
      worst = std::max(worst, std::fabs(y[size_t(t * d + i)] - want) / (std::fabs(want) + 1e-6));
    }
  }
  check(worst < 1e-5, "rms_norm vs double loop: worst rel err " + fmt(worst));
}

void test_rope() {
  const int hd = 64, heads = 3;
  const std::vector<float> inv = rope_inv_freq(1e6, hd);
  double worst_freq = 0;
  for (int i = 0; i < hd / 2; ++i) {
    const double want = 1.0 / std::pow(1e6, 2.0 * i / hd);
    worst_freq = std::max(worst_freq, std::fabs(inv[size_t(i)] - want) / want);
  }
  check(inv[0] == 1.0f && worst_freq < 3e-7, "rope inv_freq within float32 rounding of theta^(-2i/d): " + fmt(worst_freq));
  std::vector<float> x = randn(size_t(heads * hd));
  const std::vector<float> x0 = x;
  const int64_t pos = 1234;
  std::vector<float> c(hd / 2), s(hd / 2);
  rope_cos_sin(inv, pos, c.data(), s.data());
  rope_apply(x.data(), heads, hd, c.data(), s.data());
  double worst = 0, norm_diff = 0;
  for (int h = 0; h < heads; ++h) {
    double n0 = 0, n1 = 0;
    for (int i = 0; i < hd; ++i) {
      // rotate_half: out = x·cos(θ) + [-x2, x1]·sin(θ), θ repeated over both halves
      const int j = i % (hd / 2);
      const double th = double(float(pos) * inv[size_t(j)]);
      const double rot = i < hd / 2 ? -x0[size_t(h * hd + i + hd / 2)] : x0[size_t(h * hd + i - hd / 2)];
      const double want = x0[size_t(h * hd + i)] * std::cos(th) + rot * std::sin(th);
      worst = std::max(worst, std::fabs(x[size_t(h * hd + i)] - want));
      n0 += double(x0[size_t(h * hd + i)]) * x0[size_t(h * hd + i)];
      n1 += double(x[size_t(h * hd + i)]) * x[size_t(h * hd + i)];
    }
    norm_diff = std::max(norm_diff, std::fabs(std::sqrt(n1) - std::sqrt(n0)));
  }
  check(worst < 1e-5, "rope_apply vs rotate_half formula: worst abs err " + fmt(worst));
  check(norm_diff < 1e-4, "rope preserves each head's norm");
}

void test_router() {
  int bad = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int E = 8, k = 2;
    const std::vector<float> logits = randn(E, 2.f);
    int32_t ids[2];
    float w[2];
    router_topk(logits.data(), E, k, true, ids, w);
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
    double mx = *std::max_element(logits.begin(), logits.end()), sum = 0;
    for (float l : logits) sum += std::exp(l - mx);
    const double p0 = std::exp(logits[size_t(order[0])] - mx) / sum, p1 = std::exp(logits[size_t(order[1])] - mx) / sum;
    if (ids[0] != order[0] || ids[1] != order[1] || std::fabs(w[0] - p0 / (p0 + p1)) > 1e-6 ||
        std::fabs(w[0] + w[1] - 1.0f) > 1e-6)
      ++bad;
  }
  check(bad == 0, "router softmax/top-2/renormalise vs sort over 200 random rows");
  const float tie[4] = {0.5f, 2.0f, 2.0f, 1.0f};
  int32_t ids[2];
  float w[2];
  router_topk(tie, 4, 2, true, ids, w);
  check(ids[0] == 1 && ids[1] == 2 && w[0] == 0.5f && w[1] == 0.5f, "router ties keep the lower expert first");
  std::vector<float> a = {-2.f, 0.f, 3.f}, b = {1.f, 2.f, 0.5f};
  swiglu(a.data(), b.data(), 3);
  const double want2 = 3.0 / (1.0 + std::exp(-3.0)) * 0.5;
  check(std::fabs(a[2] - want2) < 1e-6 && a[1] == 0.f, "swiglu = silu(a)·b");
}

void test_attention(ThreadPool& pool) {
  struct Case { int heads, kv_heads, hd, window; int64_t n_past, n; };
  const Case cases[] = {{4, 2, 16, 0, 0, 7},  {4, 2, 16, 3, 0, 9},  {4, 1, 8, 5, 6, 4},  {8, 8, 32, 4, 10, 1},
                        {6, 2, 16, 1, 3, 5},  {4, 2, 16, 100, 2, 6}, {4, 2, 12, 0, 3, 4}, {2, 1, 128, 0, 40, 3},
                        {2, 1, 320, 0, 5, 2}, {4, 2, 64, 0, 700, 2}, {4, 2, 64, 256, 700, 3}};
  for (const Case& c : cases) {
    AttentionShape s{c.heads, c.kv_heads, c.hd, c.window};
    const int64_t total = c.n_past + c.n;
    const std::vector<float> q = randn(size_t(c.n * c.heads * c.hd));
    const std::vector<float> k = randn(size_t(total * c.kv_heads * c.hd));
    const std::vector<float> v = randn(size_t(total * c.kv_heads * c.hd));
    std::vector<float> out(q.size()), ref(q.size());
    attention_reference(q.data(), c.n, c.n_past, k.data(), v.data(), s, ref.data());
    for (DenseIsa isa : {DenseIsa::Scalar, DenseIsa::Avx2, DenseIsa::Avx512}) {
      if (!dense_isa_supported(isa)) continue;
      attention_isa(isa, q.data(), c.n, c.n_past, k.data(), v.data(), s, out.data(), pool);
      const double err = rel_err(out.data(), ref.data(), out.size());
      check(err < 1e-5, std::string("attention ") + dense_isa_name(isa) + " heads " + std::to_string(c.heads) + "/" +
                            std::to_string(c.kv_heads) + " hd " + std::to_string(c.hd) + " window " +
                            std::to_string(c.window) + " past " + std::to_string(c.n_past) + " n " +
                            std::to_string(c.n) + " vs brute force: rel err " + fmt(err));
    }
  }
  // Window 1: every query sees only its own key, so the output is exactly that position's value.
  AttentionShape s{2, 1, 4, 1};
  const std::vector<float> q = randn(3 * 2 * 4), k = randn(3 * 4), v = randn(3 * 4);
  std::vector<float> out(q.size());
  attention(q.data(), 3, 0, k.data(), v.data(), s, out.data(), pool);
  bool own = true;
  for (int t = 0; t < 3; ++t)
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 4; ++i) own &= std::fabs(out[size_t((t * 2 + h) * 4 + i)] - v[size_t(t * 4 + i)]) < 1e-6;
  check(own, "window 1 attends to the query's own position only");
}

void test_sampling() {
  std::vector<float> logits = randn(1000, 3.f);
  check(argmax(logits.data(), 1000) == int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()),
        "argmax = first maximum");
  SamplingOptions o;
  o.greedy = false;
  o.temperature = 0.8f;
  o.top_k = 40;
  o.top_p = 0.9f;
  o.seed = 7;
  const std::vector<double> p = Sampler(o).distribution(logits.data(), 1000);
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  const int support = int(std::count_if(p.begin(), p.end(), [](double x) { return x > 0; }));
  std::vector<int> top(1000);
  std::iota(top.begin(), top.end(), 0);
  std::sort(top.begin(), top.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  bool in_top_k = true;
  for (int i = 40; i < 1000; ++i) in_top_k &= p[size_t(top[size_t(i)])] == 0;
  check(std::fabs(total - 1.0) < 1e-12 && support >= 1 && support <= 40 && in_top_k,
        "top-k 40 / top-p 0.9 distribution sums to 1 over " + std::to_string(support) + " of the top 40 tokens");
  // Nucleus: the kept mass before renormalisation reaches top_p, and one token fewer would not.
  o.top_k = 0;
  const std::vector<double> pn = Sampler(o).distribution(logits.data(), 1000);
  const int kept = int(std::count_if(pn.begin(), pn.end(), [](double x) { return x > 0; }));
  double mx = logits[size_t(top[0])], z = 0;
  for (float l : logits) z += std::exp((l - mx) / 0.8);
  double mass_kept = 0, mass_less = 0;
  for (int i = 0; i < kept; ++i) mass_kept += std::exp((logits[size_t(top[size_t(i)])] - mx) / 0.8) / z;
  mass_less = mass_kept - std::exp((logits[size_t(top[size_t(kept - 1)])] - mx) / 0.8) / z;
  check(mass_kept >= 0.9 - 1e-9 && mass_less < 0.9, "top-p keeps the smallest prefix reaching 0.9 (" + std::to_string(kept) + " tokens)");
  Sampler a(o), b(o);
  std::vector<int32_t> sa, sb;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(a.sample(logits.data(), 1000));
    sb.push_back(b.sample(logits.data(), 1000));
  }
  check(sa == sb, "two samplers with the same seed draw the same 50 tokens");
  // Frequencies follow the distribution (χ²-style bound on the most likely token).
  Sampler c(o);
  const int draws = 20000;
  int hits = 0;
  for (int i = 0; i < draws; ++i) hits += c.sample(logits.data(), 1000) == top[0];
  const double expect = pn[size_t(top[0])] * draws, sd = std::sqrt(expect * (1 - pn[size_t(top[0])]));
  check(std::fabs(hits - expect) < 5 * sd, "most likely token drawn " + std::to_string(hits) + " times, expected " + fmt(expect));
}

void test_json() {
  const JsonValue v = parse_json(R"({"a": [1, 2.5, -3e2, true, null], "s": "x\u00e9\ud83d\ude00\n", "big": 12345678901234})", "t.json");
  check(v.find("a")->size() == 5 && (*v.find("a"))[0].as_int() == 1 && (*v.find("a"))[2].as_number() == -300.0 &&
            v.find("a")->as_array()[4].is_null() && v.find("big")->as_int() == 12345678901234LL,
        "json: numbers, literals, big integers");
  check(v.find("s")->as_string() == "x\xc3\xa9\xf0\x9f\x98\x80\n", "json: \\u escapes and surrogate pairs → UTF-8");
  {
    // Numbers parse the same under a comma-decimal locale (when one is installed).
    const char* old = std::setlocale(LC_NUMERIC, nullptr);
    const std::string saved = old ? old : "C";
    const bool switched = std::setlocale(LC_NUMERIC, "de_DE.UTF-8") || std::setlocale(LC_NUMERIC, "fr_FR.UTF-8");
    const JsonValue n = parse_json("[0.02, 1e-05, 1000000.0, 123456789012345678901234]", "n.json");
    std::setlocale(LC_NUMERIC, saved.c_str());
    check(n[0].as_number() == 0.02 && n[1].as_number() == 1e-05 && n[2].as_number() == 1e6 && !n[3].is_integer() &&
              n[3].as_number() > 1.2e23,
          std::string("json: numbers are locale-independent") + (switched ? " (checked under a comma locale)" : ""));
  }
  {  // fuzz: random edits of a config-like document parse or raise mixq::Error, nothing else
    const std::string doc =
        R"({"model_type": "mixtral", "hidden_size": 256, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05,)"
        R"( "sliding_window": null, "tie_word_embeddings": false, "name": "x\u00e9\n", "list": [1, [2, {"a": []}]]})";
    std::mt19937 gen(11);
    int ok = 0, err = 0, other = 0;
    const char alphabet[] = "{}[]\":,0123456789-+eE.tfnul \\u\x01\x80\xff";
    for (int trial = 0; trial < 3000; ++trial) {
      std::string c = doc;
      const int edits = 1 + int(gen() % 4);
      for (int e = 0; e < edits; ++e) {
        const size_t at = gen() % c.size();
        switch (gen() % 3) {
          case 0: c[at] = alphabet[gen() % (sizeof alphabet - 1)]; break;
          case 1: c.erase(at, 1 + gen() % 3); break;
          default: c.insert(at, 1, alphabet[gen() % (sizeof alphabet - 1)]);
        }
      }
      try {
        parse_json(c, "fuzz.json");
        ++ok;
      } catch (const Error&) {
        ++err;
      } catch (...) {
        ++other;
      }
    }
    check(other == 0 && err > 1000, "json fuzz: 3000 mutated documents → " + std::to_string(ok) + " parsed, " +
                                         std::to_string(err) + " mixq::Error, " + std::to_string(other) + " other");
  }
  check_throws([] { parse_json("[1e999]", "x"); }, {"out of range"}, "json: overflowing number rejected");
  check_throws([] { parse_json("{\"a\": 1,}", "cfg.json"); }, {"cfg.json", "byte 8"}, "json: trailing comma rejected with offset");
  check_throws([] { parse_json("{\"a\": 1, \"a\": 2}", "cfg.json"); }, {"duplicate key \"a\""}, "json: duplicate key rejected");
  check_throws([] { parse_json("[01]", "x"); }, {"x"}, "json: leading zero rejected");
  check_throws([] { parse_json("\"\\ud800\"", "x"); }, {"surrogate"}, "json: unpaired surrogate rejected");
  check_throws([] { parse_json("[NaN]", "x"); }, {"unexpected character"}, "json: NaN rejected");
  check_throws([] { parse_json("{} x", "x"); }, {"trailing"}, "json: trailing garbage rejected");
}

void test_pool() {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hit(1001);
  pool.parallel_for(1001, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hit[size_t(i)]++;
  });
  bool once = true;
  for (auto& h : hit) once &= h.load() == 1;
  check(once, "parallel_for visits every index exactly once");
  check_throws([&] { pool.parallel_for(10, [](int64_t b, int64_t) { if (b > 0) throw Error("boom in worker"); }); },
               {"boom in worker"}, "an exception in a worker reaches the caller");
  int64_t sum = 0;
  for (int r = 0; r < 2000; ++r) {  // many tiny jobs back to back (the decode pattern)
    std::atomic<int64_t> s{0};
    pool.parallel_for(7, [&](int64_t b, int64_t e) { s += e - b; });
    sum += s;
  }
  check(sum == 2000 * 7, "2000 consecutive small jobs complete");
}

void test_backend() {
  const std::vector<Device> devs = available_devices();
  check(!devs.empty() && devs[0].str() == "cpu:0", "available_devices() starts with cpu (" + std::to_string(devs.size()) + " devices)");
  auto cpu = make_backend(Device{DeviceKind::Cpu, 0});
  Tensor t = cpu->empty(DType::U8, {1000}, "bytes");
  const std::vector<uint8_t> src(1000, 7);
  std::vector<uint8_t> dst(10, 0);
  cpu->from_host(src.data(), src.size(), t);
  cpu->to_host(t.slice_rows(990, 10), dst.data(), 10);
  check(dst == std::vector<uint8_t>(10, 7) && t.buffer->size() == 1000 &&
            reinterpret_cast<uintptr_t>(t.buffer->data()) % 64 == 0,
        "cpu backend: 64-byte aligned buffer, copies in and out");
  check(cpu->total_memory() > 0 && cpu->free_memory() <= cpu->total_memory(), "cpu backend reports memory");
  check(cpu->arena_bytes() >= 1000, "cpu backend: the arena counts the allocation");
  check_throws([&] { cpu->to_host(t.slice_rows(995, 5), dst.data(), 10); }, {"exceeds tensor"}, "out-of-range copy is an error");
  check_throws([&] { (void)t.slice_rows(995, 10); }, {"out of range"}, "out-of-range view is an error");
  if (!backend_registered(DeviceKind::Cuda)) {
    check_throws([] { make_backend(Device{DeviceKind::Cuda, 0}); }, {"cuda:0", "no CUDA backend"},
                 "cuda:0 without a CUDA backend is a clear error");
  }
}

}  // namespace

int main() {
  std::string feats;
  for (const std::string& f : cpu_features()) feats += f + " ";
  std::printf("cpu features: %s\nsimd level: %s\n", feats.c_str(), cpu_simd_level().c_str());
  ThreadPool pool(2);
  test_conversions();
  test_dense(pool);
  test_rms_norm();
  test_rope();
  test_router();
  test_attention(pool);
  test_sampling();
  test_json();
  test_pool();
  test_backend();
  return finish();
}
