// Every op of the backend interface on every backend present (the CPU, as cpu:0 and a virtual cpu:1; each GPU),
// against its plain reference over a table of shapes: 1, 3, 17 and 513 tokens (attention: Mixtral's 32/8 heads
// at 0, 100 and 3000 cached tokens, windows 0, 4096, 1000, 37); 8 experts top-2 and 128 experts
// top-8 (and 256 for the router); dense bf16/fp16/f32 and AWQ int4 at group sizes 32, 64 and 128. Outputs are
// poisoned (NaN) before each run so an element an op forgets to write shows up. The device checker is on.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "bench.h"  // SyntheticStore: tensors built in memory
#include "core/backend.h"
#include "ops/attention.h"
#include "ops/embed.h"
#include "ops/linear.h"
#include "ops/moe.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/argmax.h"
#include "backend_tensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

std::mt19937 rng(7);
const int kTokens[] = {1, 3, 17, 513};

std::vector<float> randv(size_t n, float scale = 1.f) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

bool gpu(const Backend& b) { return b.device().kind == DeviceKind::Cuda; }

bool finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// A linear layer [out, in] in `kind`: "bf16", "f16", "f32" or "awq-g32|64|128" (random codes, zeros and scales).
LinearSource make_source(SyntheticStore& store, const std::string& name, int64_t out, int64_t in, const std::string& kind) {
  LinearSource s;
  s.name = name;
  if (kind.rfind("awq", 0) == 0) {
    const int group = std::stoi(kind.substr(5));
    store.add_words(name + ".qweight", {in, out / 8}, true, 0);
    store.add_words(name + ".qzeros", {in / group, out / 8}, true, 0);
    TensorView& sc = store.alloc(name + ".scales", DType::F16, {in / group, out});
    auto* p = static_cast<uint16_t*>(const_cast<void*>(sc.data));
    std::uniform_real_distribution<float> u(0.002f, 0.02f);
    for (int64_t i = 0; i < sc.numel(); ++i) p[i] = f32_to_f16(u(rng));
    s.qweight = store.find(name + ".qweight");
    s.qzeros = store.find(name + ".qzeros");
    s.scales = store.find(name + ".scales");
    s.quant.enabled = true;
    s.quant.quant_method = "awq";
    s.quant.version = "gemm";
    s.quant.bits = 4;
    s.quant.group_size = group;
    return s;
  }
  const DType dt = kind == "bf16" ? DType::BF16 : kind == "f16" ? DType::F16 : DType::F32;
  s.transposed = kind == "f32-transposed";
  TensorView& w = store.alloc(name + ".weight", dt, s.transposed ? std::vector<int64_t>{in, out} : std::vector<int64_t>{out, in});
  const std::vector<float> v = randv(size_t(out * in), 0.1f);
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::F32) static_cast<float*>(const_cast<void*>(w.data))[i] = v[i];
    else static_cast<uint16_t*>(const_cast<void*>(w.data))[i] = dt == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  }
  s.weight = store.find(name + ".weight");
  return s;
}

void test_embed_norm_rope_add(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  SyntheticStore store;
  store.add_bf16("table", {100, 32}, 1.f);
  const TensorView& tv = *store.find("table");
  Tensor table = b.upload(tv, nullptr);
  for (int n : kTokens) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = int32_t(rng() % 100);
    Tensor x = poisoned(b, {n, 32}, "x");
    b.embed(table, put(b, ids, {n}, DType::I32, "ids"), x);
    std::vector<float> want(size_t(n * 32));
    embed_rows(tv.data, tv.dtype, 100, 32, ids.data(), n, want.data());
    check(get(b, x) == want, dev + "embed " + std::to_string(n) + " tokens == reference");

    for (int d : {32, 64}) {  // d = head_dim: the per-head q/k norm shape [n·heads, head_dim] too
      const std::vector<float> xv = randv(size_t(n * 4 * d)), wv = randv(size_t(d));
      Tensor y = poisoned(b, {n * 4, d}, "y");
      b.rms_norm(putf(b, xv, {n * 4, d}, "x"), putf(b, wv, {d}, "w"), 1e-5f, y);
      std::vector<float> ref(xv.size());
      rms_norm(xv.data(), wv.data(), n * 4, d, 1e-5f, ref.data());
      check(rel_err(get(b, y).data(), ref.data(), ref.size()) < 1e-6,
            dev + "rms_norm [" + std::to_string(n * 4) + ", " + std::to_string(d) + "]");
    }
    const int heads = 4, hd = 64;
    const std::vector<float> q = randv(size_t(n * heads * hd));
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) pos[size_t(t)] = 1000 + 3 * t;
    const std::vector<float> inv = rope_inv_freq(1e6, hd);
    Tensor qt = putf(b, q, {n, heads * hd}, "q");
    b.rope(qt, put(b, pos, {n}, DType::I32, "positions"), putf(b, inv, {hd / 2}, "inv_freq"), heads, hd);
    std::vector<float> ref = q;
    rope_rows(ref.data(), n, heads, hd, pos.data(), inv.data());
    check(rel_err(get(b, qt).data(), ref.data(), ref.size()) < 1e-6, dev + "rope " + std::to_string(n) + " tokens");

    const std::vector<float> g = randv(size_t(n * 48)), u = randv(size_t(n * 48));
    Tensor gt = putf(b, g, {n, 48}, "gate");
    b.swiglu(gt, putf(b, u, {n, 48}, "up"));
    std::vector<float> sw = g;
    swiglu(sw.data(), u.data(), int64_t(sw.size()));
    const std::vector<float> swg = get(b, gt);  // the GPU's expf may differ from std::exp in the last bit
    check(gpu(b) ? rel_err(swg.data(), sw.data(), sw.size()) < 1e-6 : swg == sw, dev + "swiglu " + std::to_string(n) + " × 48");

    const std::vector<float> a = randv(size_t(n * 32)), c = randv(size_t(n * 32));
    Tensor y = poisoned(b, {n, 32}, "sum");
    b.add(putf(b, a, {n, 32}, "a"), putf(b, c, {n, 32}, "b"), y);
    std::vector<float> s(a.size());
    for (size_t i = 0; i < s.size(); ++i) s[i] = a[i] + c[i];
    check(get(b, y) == s, dev + "add " + std::to_string(n) + " × 32");
  }
  if (!gpu(b)) {
    check_throws([&] {
      Tensor x = b.empty(DType::F32, {1, 32}, "x");
      b.embed(table, put(b, std::vector<int32_t>{100}, {1}, DType::I32, "ids"), x);
    }, {"token id 100", "vocab size 100"}, dev + "embed: an id out of range is an error naming it");
  }
}

// argmax over vocab-sized rows (Mixtral's 32000, Qwen3's 151936): random rows, rows whose maximum repeats (the
// lowest index wins), rows with NaN (never chosen) and an all-NaN row (0) — each against the reference.
void test_argmax(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  for (const int64_t vocab : {int64_t{7}, int64_t{32000}, int64_t{151936}}) {
    const int64_t rows = 5;
    std::vector<float> x = randv(size_t(rows * vocab));
    x[size_t(1 * vocab + vocab / 3)] = 50.f, x[size_t(1 * vocab + vocab / 2)] = 50.f, x[size_t(1 * vocab + vocab - 1)] = 50.f;
    x[size_t(2 * vocab)] = std::numeric_limits<float>::quiet_NaN();
    x[size_t(2 * vocab + vocab - 1)] = 60.f;
    for (int64_t i = 0; i < vocab; ++i) x[size_t(3 * vocab + i)] = std::numeric_limits<float>::quiet_NaN();
    x[size_t(4 * vocab + vocab - 1)] = 1e30f;
    std::vector<int32_t> want(static_cast<size_t>(rows), 0);
    argmax_rows(x.data(), rows, vocab, want.data());
    Tensor ids = put(b, std::vector<int32_t>(size_t(rows), -7), {rows}, DType::I32, "ids");
    b.argmax(putf(b, x, {rows, vocab}, "logits"), ids);
    const std::vector<int32_t> got = get<int32_t>(b, ids);
    check(got == want && want[1] == int32_t(vocab / 3) && want[2] == int32_t(vocab - 1) && want[3] == 0,
          dev + "argmax of 5 rows × " + std::to_string(vocab) + " (ties → lowest index, NaN never wins)");
  }
}

// ---- attention ---------------------------------------------------------------------------------------------
// Mixtral shapes (32 heads, 8 kv heads, head_dim 128) over a cache of capacity 4096 in the backend's KV dtype.
// The reference reads exactly what the backend's cache holds: rows rounded to f16 where kv_dtype is F16, and the
// new k/v rows rounded the same way. Tolerances (‖out − ref‖ / ‖ref‖ against that reference):
//   f32 everywhere (the CPU):                                   1e-5
//   f16 cache, f32 q / scores / softmax / P·V (CUDA decode):     1e-4   (only the f32 sums' order differs)
//   CUDA prefill: q·log2(e)/sqrt(hd) and the softmax weights P rounded to f16 for the tensor cores, f32
//   accumulation: each rounding is ≤ 2^-11 relative, random in sign, so ~1e-3 at most: 3e-3.
// Cache rows at or past n_past + n hold NaN before each call: an op that reads a row no token can see (or lets
// a zero weight meet a NaN value) fails. Cache bytes must equal the expected ones exactly (rows written where
// they belong and nowhere else).
constexpr int kCapacity = 4096;
const AttentionShape kMixtral{32, 8, 128, 0};

float kv_round(const Backend& b, float x) { return b.kv_dtype() == DType::F16 ? f16_to_f32(f32_to_f16(x)) : x; }

// Host copy of a cache in the backend's KV dtype and its f32 values.
struct HostCache {
  std::vector<float> values;  // [capacity, kv_dim] (NaN rows included)
  std::vector<uint16_t> half;
  Tensor upload(Backend& b, const std::string& name) {
    const int64_t kv = int64_t(kMixtral.kv_heads) * kMixtral.head_dim;
    if (b.kv_dtype() == DType::F16) {
      half.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i) half[i] = f32_to_f16(values[i]);
      return put(b, half, {kCapacity, kv}, DType::F16, name);
    }
    return putf(b, values, {kCapacity, kv}, name);
  }
  bool same_bytes(Backend& b, const Tensor& t) {
    if (b.kv_dtype() == DType::F16) {
      for (size_t i = 0; i < values.size(); ++i) half[i] = f32_to_f16(values[i]);
      return get<uint16_t>(b, t) == half;
    }
    const std::vector<float> got = get(b, t);
    return std::memcmp(got.data(), values.data(), got.size() * 4) == 0;
  }
};

// Tokens whose rows are checked against the reference: all of a small batch; of a large one, the first and last
// few and every 19th (19 is prime to the 16-row warp and 64-row tile sizes, so every row offset in a tile comes up).
std::vector<int64_t> sampled_tokens(int64_t n) {
  std::vector<int64_t> ts;
  for (int64_t t = 0; t < n; ++t)
    if (n <= 17 || t < 3 || t >= n - 3 || t % 19 == 0) ts.push_back(t);
  return ts;
}

double attention_tolerance(const Backend& b, int64_t n) {
  if (!gpu(b)) return 1e-5;
  return n <= 8 ? 1e-4 : 3e-3;
}

// One call at n_past: returns the relative error over the sampled tokens; `cache_ok` says whether the caches'
// bytes are what they should be afterwards; `out_host` receives the full output.
struct AttentionRun {
  double err = 0;
  bool finite = false, cache_ok = false;
  std::vector<float> out;
};
AttentionRun run_attention(Backend& b, const std::vector<float>& base_k, const std::vector<float>& base_v, int64_t n,
                           int64_t n_past, int window) {
  AttentionShape s = kMixtral;
  s.window = window;
  const int64_t kv = int64_t(s.kv_heads) * s.head_dim, qd = int64_t(s.heads) * s.head_dim;
  HostCache kc, vc;
  kc.values.assign(size_t(kCapacity * kv), std::numeric_limits<float>::quiet_NaN());
  vc.values = kc.values;
  for (size_t i = 0; i < size_t(n_past * kv); ++i) {
    kc.values[i] = kv_round(b, base_k[i]);
    vc.values[i] = kv_round(b, base_v[i]);
  }
  Tensor kct = kc.upload(b, "k_cache"), vct = vc.upload(b, "v_cache");
  const std::vector<float> q = randv(size_t(n * qd)), k = randv(size_t(n * kv)), v = randv(size_t(n * kv));
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) pos[size_t(t)] = int32_t(n_past + t);
  Tensor out = poisoned(b, {n, qd}, "out");
  b.attention(putf(b, q, {n, qd}, "q"), putf(b, k, {n, kv}, "k"), putf(b, v, {n, kv}, "v"), kct, vct,
              put(b, pos, {n}, DType::I32, "positions"), n_past, s, out);
  for (size_t i = 0; i < k.size(); ++i) {
    kc.values[size_t(n_past * kv) + i] = kv_round(b, k[i]);
    vc.values[size_t(n_past * kv) + i] = kv_round(b, v[i]);
  }
  AttentionRun r;
  r.out = get(b, out);
  r.finite = finite(r.out);
  r.cache_ok = kc.same_bytes(b, kct) && vc.same_bytes(b, vct);
  std::vector<float> got, ref;
  std::vector<float> row(static_cast<size_t>(qd));
  for (int64_t t : sampled_tokens(n)) {
    attention_reference(&q[size_t(t * qd)], 1, n_past + t, kc.values.data(), vc.values.data(), s, row.data());
    ref.insert(ref.end(), row.begin(), row.end());
    got.insert(got.end(), r.out.begin() + t * qd, r.out.begin() + (t + 1) * qd);
  }
  r.err = rel_err(got.data(), ref.data(), ref.size());
  return r;
}

void test_attention(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  const int64_t kv = int64_t(kMixtral.kv_heads) * kMixtral.head_dim;
  const std::vector<float> base_k = randv(size_t(kCapacity * kv)), base_v = randv(size_t(kCapacity * kv));
  for (int n : kTokens)
    for (int64_t n_past : {0, 100, 3000})
      for (int window : {0, 4096, 1000, 37}) {
        // The CPU's kernels are the reference's twins (test_ops covers them at every ISA): the long prefills
        // after a cached prefix run on GPUs only, to keep this test short on the CPU.
        if (!gpu(b) && n == 513 && n_past > 0) continue;
        const AttentionRun r = run_attention(b, base_k, base_v, n, n_past, window);
        const double tol = attention_tolerance(b, n);
        check(r.finite && r.err < tol && r.cache_ok,
              dev + "attention 32/8 heads hd 128 cap 4096, " + std::to_string(n) + " tokens after " +
                  std::to_string(n_past) + ", window " + std::to_string(window) + ": rel err " + fmt(r.err) +
                  " (tol " + fmt(tol) + ")" + (r.finite ? "" : ", NON-FINITE output") +
                  (r.cache_ok ? ", cache rows exact" : ", CACHE BYTES WRONG"));
      }
}

// What a decode step replayed as a graph sees: the same q, k, v, positions, out and cache tensors (same device
// memory) at every step, their contents changed on the device before each call; the position crosses the
// split-K chunk boundary at 128 and runs to the last cache row. Each step against the reference; each step run
// twice gives bitwise the same output (a fixed merge order).
void test_attention_decode_steps(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  for (int window : {0, 100}) {
    AttentionShape s = kMixtral;
    s.window = window;
    const int64_t kv = int64_t(s.kv_heads) * s.head_dim, qd = int64_t(s.heads) * s.head_dim;
    HostCache kc, vc;
    kc.values.assign(size_t(kCapacity * kv), std::numeric_limits<float>::quiet_NaN());
    vc.values = kc.values;
    std::vector<float> hk = randv(size_t(kCapacity * kv)), hv = randv(size_t(kCapacity * kv));
    for (size_t i = 0; i < hk.size(); ++i) {
      kc.values[i] = kv_round(b, hk[i]);
      vc.values[i] = kv_round(b, hv[i]);
    }
    Tensor kct = kc.upload(b, "k_cache"), vct = vc.upload(b, "v_cache");
    Tensor qt = b.empty(DType::F32, {1, qd}, "q"), kt = b.empty(DType::F32, {1, kv}, "k"),
           vt = b.empty(DType::F32, {1, kv}, "v"), pt = b.empty(DType::I32, {1}, "positions");
    Tensor out = poisoned(b, {1, qd}, "out");
    double worst = 0;
    bool finite_all = true, same_twice = true;
    int steps = 0;
    std::vector<float> row(static_cast<size_t>(qd));
    for (int64_t lo : {int64_t(120), int64_t(kCapacity - 6)})
      for (int64_t p = lo; p < lo + 12 && p < kCapacity; ++p, ++steps) {
        const std::vector<float> q = randv(size_t(qd)), k = randv(size_t(kv)), v = randv(size_t(kv));
        const int32_t pos = int32_t(p);
        std::vector<float> first;
        for (int run = 0; run < 2; ++run) {
          b.from_host(q.data(), q.size() * 4, qt);
          b.from_host(k.data(), k.size() * 4, kt);
          b.from_host(v.data(), v.size() * 4, vt);
          b.from_host(&pos, 4, pt);
          b.attention(qt, kt, vt, kct, vct, pt, p, s, out);
          const std::vector<float> got = get(b, out);
          if (run == 0) first = got;
          else same_twice &= std::memcmp(first.data(), got.data(), got.size() * 4) == 0;
        }
        for (int64_t i = 0; i < kv; ++i) {
          kc.values[size_t(p * kv + i)] = kv_round(b, k[size_t(i)]);
          vc.values[size_t(p * kv + i)] = kv_round(b, v[size_t(i)]);
        }
        attention_reference(q.data(), 1, p, kc.values.data(), vc.values.data(), s, row.data());
        finite_all &= finite(first);
        worst = std::max(worst, rel_err(first.data(), row.data(), row.size()));
      }
    check(finite_all && worst < attention_tolerance(b, 1) && same_twice,
          dev + "attention decode steps (same tensors, positions moved on the device), window " +
              std::to_string(window) + ": " + std::to_string(steps) + " steps, worst rel err " + fmt(worst) +
              (same_twice ? ", each step bitwise repeatable" : ", NOT REPEATABLE"));
  }
}

void test_attention_contract(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  const AttentionShape s{4, 2, 64, 0};
  Tensor q = b.empty(DType::F32, {2, 256}, "q"), k = b.empty(DType::F32, {2, 128}, "k"),
         v = b.empty(DType::F32, {2, 128}, "v"), out = b.empty(DType::F32, {2, 256}, "out");
  Tensor pos = put(b, std::vector<int32_t>{7, 8}, {2}, DType::I32, "positions");
  const DType other = b.kv_dtype() == DType::F16 ? DType::F32 : DType::F16;
  check_throws([&] {
    Tensor kc = b.empty(other, {16, 128}, "k_cache"), vc = b.empty(other, {16, 128}, "v_cache");
    b.attention(q, k, v, kc, vc, pos, 7, s, out);
  }, {"attention", "KV caches", dtype_name(b.kv_dtype())}, dev + "attention: caches of another dtype are refused");
  check_throws([&] {
    Tensor kc = b.empty(b.kv_dtype(), {16, 128}, "k_cache"), vc = b.empty(b.kv_dtype(), {16, 128}, "v_cache");
    b.attention(q, k, v, kc, vc, put(b, std::vector<int32_t>{7}, {1}, DType::I32, "positions"), 7, s, out);
  }, {"attention", "positions"}, dev + "attention: positions not [n] are refused");
  check_throws([&] {
    Tensor kc = b.empty(b.kv_dtype(), {8, 128}, "k_cache"), vc = b.empty(b.kv_dtype(), {8, 128}, "v_cache");
    b.attention(q, k, v, kc, vc, pos, 7, s, out);
  }, {"attention", "at position 7"}, dev + "attention: n_past + n past the capacity is refused");
}

void test_linear(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  SyntheticStore store;
  for (const std::string kind : {"bf16", "f16", "f32", "f32-transposed", "awq-g32", "awq-g64", "awq-g128"}) {
    const int64_t in = 256, out = 192;
    auto w = b.prepare_linear(make_source(store, "lin." + kind, out, in, kind));
    for (int n : kTokens) {
      const std::vector<float> x = randv(size_t(n * in));
      Tensor y = poisoned(b, {n, out}, "y");
      b.linear(*w, putf(b, x, {n, in}, "x"), y);
      std::vector<float> ref(size_t(n * out));
      linear_reference(*w, x.data(), n, ref.data());
      const std::vector<float> got = get(b, y);
      const double err = rel_err(got.data(), ref.data(), ref.size());
      // The GPU's int4 kernels (the GEMV up to 8 tokens, the tensor-core GEMM above) take x rounded to fp16.
      const double tol = gpu(b) && kind.rfind("awq", 0) == 0 ? 2e-3 : 2e-5;
      check(finite(got) && err < tol, dev + "linear " + kind + " [192, 256], " + std::to_string(n) +
                                           " tokens: rel err " + fmt(err));
    }
  }
}

// Independent oracle of the router: a stable sort of the logits and a double softmax.
void router_oracle(const float* logits, int E, int k, bool renorm, int32_t* ids, float* w) {
  std::vector<int> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return logits[a] > logits[c]; });
  const double mx = *std::max_element(logits, logits + E);
  double sum = 0, chosen = 0;
  for (int e = 0; e < E; ++e) sum += std::exp(double(logits[e]) - mx);
  for (int j = 0; j < k; ++j) chosen += std::exp(double(logits[order[size_t(j)]]) - mx) / sum;
  for (int j = 0; j < k; ++j) {
    ids[j] = order[size_t(j)];
    const double p = std::exp(double(logits[order[size_t(j)]]) - mx) / sum;
    w[j] = float(renorm ? p / chosen : p);
  }
}

void test_router(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  struct Case { int E, k; bool renorm; };
  for (const Case c : {Case{8, 2, true}, Case{128, 8, true}, Case{128, 8, false}, Case{256, 8, true}}) {
    for (int n : kTokens) {
      const std::vector<float> logits = randv(size_t(n * c.E), 2.f);
      Tensor ids = b.empty(DType::I32, {n, c.k}, "ids"), w = poisoned(b, {n, c.k}, "weights");
      b.router(putf(b, logits, {n, c.E}, "logits"), c.k, c.renorm, ids, w);
      const std::vector<int32_t> gi = get<int32_t>(b, ids);
      const std::vector<float> gw = get(b, w);
      int bad = 0;
      for (int t = 0; t < n; ++t) {
        int32_t ri[8];
        float rw[8];
        router_oracle(&logits[size_t(t * c.E)], c.E, c.k, c.renorm, ri, rw);
        for (int j = 0; j < c.k; ++j)
          bad += gi[size_t(t * c.k + j)] != ri[j] || std::fabs(gw[size_t(t * c.k + j)] - rw[j]) > 1e-6f;
      }
      check(bad == 0, dev + "router " + std::to_string(c.E) + " experts top-" + std::to_string(c.k) +
                          (c.renorm ? " renormalised, " : " not renormalised, ") + std::to_string(n) +
                          " tokens vs sort + double softmax");
    }
  }
  check_throws([&] {
    Tensor ids = b.empty(DType::I32, {1, 9}, "ids"), w = b.empty(DType::F32, {1, 9}, "w");
    b.router(putf(b, randv(16), {1, 16}, "logits"), 9, true, ids, w);
  }, {"router", "top-9"}, dev + "router: top-k above 8 is refused");
}

void test_moe(Backend& b) {
  const std::string dev = b.device().str() + ": ";
  struct Case { int E, k; int64_t hidden, inter; std::string kind; };
  // AWQ with more than 16 routed slots runs the GPU's grouped tensor-core path (routes grouped on the device).
  for (const Case c : {Case{8, 2, 64, 96, "awq-g32"}, Case{8, 2, 64, 128, "bf16"}, Case{128, 8, 32, 64, "f32"},
                       Case{128, 8, 64, 128, "awq-g64"}}) {
    SyntheticStore store;
    std::vector<ExpertWeights> experts(size_t(c.E));
    std::vector<const Linear*> w1, w2, w3, held1, held2, held3;
    ExpertSet all, even;
    for (int e = 0; e < c.E; ++e) {
      const std::string p = "e" + std::to_string(e) + ".";
      experts[size_t(e)].w1 = b.prepare_linear(make_source(store, p + "w1", c.inter, c.hidden, c.kind));
      experts[size_t(e)].w2 = b.prepare_linear(make_source(store, p + "w2", c.hidden, c.inter, c.kind));
      experts[size_t(e)].w3 = b.prepare_linear(make_source(store, p + "w3", c.inter, c.hidden, c.kind));
      w1.push_back(experts[size_t(e)].w1.get());
      w2.push_back(experts[size_t(e)].w2.get());
      w3.push_back(experts[size_t(e)].w3.get());
      all.experts.push_back(&experts[size_t(e)]);
      even.experts.push_back(e % 2 == 0 ? &experts[size_t(e)] : nullptr);
      held1.push_back(e % 2 == 0 ? w1.back() : nullptr);
      held2.push_back(e % 2 == 0 ? w2.back() : nullptr);
      held3.push_back(e % 2 == 0 ? w3.back() : nullptr);
    }
    for (int n : kTokens) {
      const std::vector<float> x = randv(size_t(n * c.hidden)), logits = randv(size_t(n * c.E), 2.f);
      Tensor xt = putf(b, x, {n, c.hidden}, "x");
      Tensor ids = b.empty(DType::I32, {n, c.k}, "ids"), wts = b.empty(DType::F32, {n, c.k}, "weights");
      b.router(putf(b, logits, {n, c.E}, "logits"), c.k, true, ids, wts);
      const std::vector<int32_t> hid = get<int32_t>(b, ids);
      const std::vector<float> hw = get(b, wts);
      const std::string what = std::to_string(c.E) + " experts top-" + std::to_string(c.k) + " " + c.kind + ", " +
                               std::to_string(n) + " tokens";
      // Every expert held: every slot against the reference.
      Tensor slots = poisoned(b, {n * c.k, c.hidden}, "slots");
      b.moe_experts(all, xt, ids, wts, slots);
      std::vector<float> ref(size_t(n * c.k * c.hidden));
      moe_experts_reference(w1, w2, w3, x.data(), n, c.hidden, hid.data(), hw.data(), c.k, ref.data());
      const std::vector<float> got = get(b, slots);
      const double err = rel_err(got.data(), ref.data(), ref.size());
      const double tol = gpu(b) && c.kind.rfind("awq", 0) == 0 ? 2e-3 : 5e-5;
      check(finite(got) && err < tol, dev + "moe_experts " + what + ": rel err " + fmt(err));
      // Only the even experts held: their slots as above, the others untouched (still poison).
      Tensor part = poisoned(b, {n * c.k, c.hidden}, "slots of even experts");
      b.moe_experts(even, xt, ids, wts, part);
      const std::vector<float> pg = get(b, part);
      bool ok = true;
      for (int64_t s = 0; s < n * c.k; ++s) {
        const bool held = hid[size_t(s)] % 2 == 0;
        for (int64_t i = 0; i < c.hidden; ++i) {
          const float v = pg[size_t(s * c.hidden + i)];
          ok &= held ? v == got[size_t(s * c.hidden + i)] : std::isnan(v);
        }
      }
      check(ok, dev + "moe_experts " + what + " with only even experts held: their slots identical, others untouched");
      // Combine from two slot tensors (even experts from one, odd from the other) == the reference sum.
      std::vector<int> owner(size_t(c.E));
      for (int e = 0; e < c.E; ++e) owner[size_t(e)] = e % 2;
      Tensor out = poisoned(b, {n, c.hidden}, "out");
      b.moe_combine({&part, &slots}, owner, ids, out);
      std::vector<float> want(size_t(n * c.hidden));
      moe_combine_rows({got.data(), got.data()}, owner, hid.data(), n, c.k, c.hidden, want.data());
      check(get(b, out) == want, dev + "moe_combine " + what + " from two slot tensors == the one-tensor sum, bitwise");
    }
  }
}

void test_copy_between_virtual_devices() {
  auto d0 = make_backend(Device::parse("cpu:0")), d1 = make_backend(Device::parse("cpu:1"));
  const std::vector<float> v = randv(1000);
  Tensor a = putf(*d0, v, {10, 100}, "a");
  Tensor b = poisoned(*d1, {10, 100}, "b");
  d1->copy(a, b);
  check(get(*d1, b) == v && b.device() == Device::parse("cpu:1"), "copy cpu:0 → cpu:1: same bits, on cpu:1");
  check(d0->arena_bytes() >= 4000 && d1->arena_bytes() >= 4000, "each virtual device counts its own arena");
}

}  // namespace

int main() {
  set_device_checks(true);
  std::vector<Device> devices = available_devices();
  devices.push_back(Device::parse("cpu:1"));  // a virtual device runs the same table
  for (const Device& d : devices) {
    auto b = make_backend(d, BackendOptions{2});
    std::printf("# backend %s\n", b->name().c_str());
    test_embed_norm_rope_add(*b);
    test_attention(*b);
    test_attention_decode_steps(*b);
    test_attention_contract(*b);
    test_linear(*b);
    test_router(*b);
    test_moe(*b);
    test_argmax(*b);
  }
  test_copy_between_virtual_devices();
  return finish();
}
