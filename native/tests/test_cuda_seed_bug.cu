// The failure mode MixQ was born from (AutoAWQ's Mixtral: moe_align_block_size launched on whichever GPU was
// current, not its tensors' GPU), for every op entry of the CUDA backend:
//   1. every op called on the backend of another device than the current one — cuda:1 while cuda:0 is current
//      with two GPUs, else logical device cuda:0/1 while cuda:0 is current — with its tensors on that device gives
//      its reference's answer and leaves the current device alone (moe_experts both ways: the routed decode GEMV
//      and the prefill path through moe_align_block_size and the grouped GEMM);
//   2. every op given one tensor (or weight) of cuda:0 fails before launching anything, naming the op, the
//      tensor and both devices (the checker, MIXQ_CHECK_DEVICES=1).
// With one GPU the real cross-GPU part of (1) is skipped with a message; (2) and the logical-device runs are not.
#include <algorithm>
#include <numeric>

#include "core/backend.h"
#include "cuda_backend.h"
#include "ops/argmax.h"
#include "ops/attention.h"
#include "ops/embed.h"
#include "ops/linear.h"
#include "ops/moe.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/router.h"
#include "backend_tensors.h"
#include "test_cuda_util.h"

using namespace mixq;
using mixq_test::get;
using mixq_test::put;
using mixq_test::putf;

namespace {

std::mt19937 rng(11);

std::vector<float> randv(size_t n, float scale = 1.f) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

double rel(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += double(got[i] - ref[i]) * (got[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

int current_device() {
  int d = -1;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}


// Host tensors a LinearSource points into (kept alive with the source).
struct HostLinear {
  std::vector<uint16_t> weight, scales;
  std::vector<int32_t> qweight, qzeros;
  TensorView w, qw, qz, sc;
  LinearSource src;
};
// [out, in] bf16, or AWQ int4 with `group` (> 0): random codes, zeros and scales.
std::unique_ptr<HostLinear> host_linear(const std::string& name, int64_t out, int64_t in, int group) {
  auto h = std::make_unique<HostLinear>();
  h->src.name = name;
  if (group == 0) {
    for (float v : randv(size_t(out * in), 0.1f)) h->weight.push_back(f32_to_bf16(v));
    h->w = {name + ".weight", "", DType::BF16, {out, in}, h->weight.data(), h->weight.size() * 2};
    h->src.weight = &h->w;
    return h;
  }
  std::uniform_int_distribution<int64_t> word(0, 0xFFFFFFFFll);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  for (int64_t i = 0; i < in * out / 8; ++i) h->qweight.push_back(int32_t(uint32_t(word(rng))));
  for (int64_t i = 0; i < in / group * out / 8; ++i) h->qzeros.push_back(int32_t(uint32_t(word(rng))));
  for (int64_t i = 0; i < in / group * out; ++i) h->scales.push_back(f32_to_f16(scale(rng)));
  h->qw = {name + ".qweight", "", DType::I32, {in, out / 8}, h->qweight.data(), h->qweight.size() * 4};
  h->qz = {name + ".qzeros", "", DType::I32, {in / group, out / 8}, h->qzeros.data(), h->qzeros.size() * 4};
  h->sc = {name + ".scales", "", DType::F16, {in / group, out}, h->scales.data(), h->scales.size() * 2};
  h->src.qweight = &h->qw;
  h->src.qzeros = &h->qz;
  h->src.scales = &h->sc;
  h->src.quant.enabled = true;
  h->src.quant.quant_method = "awq";
  h->src.quant.version = "gemm";
  h->src.quant.bits = 4;
  h->src.quant.group_size = group;
  return h;
}

// The devices of one run: `b` the backend under test (not the current device's), `home` the current device's
// (cuda:0, where planted tensors come from), `third` another device of b's GPU (copy: neither side b's).
struct Devices {
  std::unique_ptr<Backend> b, home, third;
  std::string on, home_name;  // "on cuda:0/1", "cuda:0"
};

// Runs `op` with cuda:0 current; it must leave cuda:0 current.
template <class F>
void from_home(const char* op, F body) {
  CUDA_CHECK(cudaSetDevice(0));
  body();
  EXPECT(current_device() == 0, "%s moved the current device to cuda:%d", op, current_device());
}

// `body` given a tensor of cuda:0: the checker names the op, the device it runs on and cuda:0.
template <class F>
void expect_planted(Devices& d, const char* op, F body) {
  const std::string what = std::string(op) + " with a tensor of " + d.home_name + " " + d.on;
  const std::string lives = "lives on " + d.home_name;
  test::expect_error(what.c_str(), body, {op, d.on.c_str(), lives.c_str()});
}

void embed_rms_rope(Devices& d) {
  Backend& b = *d.b;
  const int64_t n = 5, hidden = 64, vocab = 50;
  std::vector<uint16_t> table_h;
  for (float v : randv(size_t(vocab * hidden))) table_h.push_back(f32_to_bf16(v));
  std::vector<int32_t> ids = {3, 49, 0, 17, 3};
  Tensor table = put(b, table_h, {vocab, hidden}, DType::BF16, "table"), ids_t = put(b, ids, {n}, DType::I32, "ids");
  Tensor x = b.empty(DType::F32, {n, hidden}, "x");
  from_home("embed", [&] { b.embed(table, ids_t, x); });
  std::vector<float> ref(size_t(n * hidden));
  embed_rows(table_h.data(), DType::BF16, vocab, hidden, ids.data(), n, ref.data());
  EXPECT(get(b, x) == ref, "embed %s", d.on.c_str());
  Tensor planted_ids = put(*d.home, ids, {n}, DType::I32, "planted ids");
  expect_planted(d, "embed", [&] { b.embed(table, planted_ids, x); });

  const std::vector<float> xv = randv(size_t(n * hidden)), wv = randv(size_t(hidden));
  Tensor xt = putf(b, xv, {n, hidden}, "x"), wt = putf(b, wv, {hidden}, "w"), y = b.empty(DType::F32, {n, hidden}, "y");
  from_home("rms_norm", [&] { b.rms_norm(xt, wt, 1e-5f, y); });
  rms_norm(xv.data(), wv.data(), n, hidden, 1e-5f, ref.data());
  EXPECT(rel(get(b, y), ref) < 1e-6, "rms_norm %s", d.on.c_str());
  Tensor planted_w = putf(*d.home, wv, {hidden}, "planted weight");
  expect_planted(d, "rms_norm", [&] { b.rms_norm(xt, planted_w, 1e-5f, y); });

  const int heads = 2, hd = 32;
  std::vector<int32_t> pos = {7, 8, 9, 10, 11};
  const std::vector<float> inv = rope_inv_freq(1e6, hd);
  Tensor pos_t = put(b, pos, {n}, DType::I32, "positions"), inv_t = putf(b, inv, {hd / 2}, "inv_freq");
  from_home("rope", [&] { b.rope(xt, pos_t, inv_t, heads, hd); });
  std::vector<float> rot = xv;
  rope_rows(rot.data(), n, heads, hd, pos.data(), inv.data());
  EXPECT(rel(get(b, xt), rot) < 1e-6, "rope %s", d.on.c_str());
  Tensor planted_pos = put(*d.home, pos, {n}, DType::I32, "planted positions");
  expect_planted(d, "rope", [&] { b.rope(xt, planted_pos, inv_t, heads, hd); });
}

void elementwise_argmax_copy(Devices& d) {
  Backend& b = *d.b;
  const int64_t n = 3, w = 96;
  const std::vector<float> av = randv(size_t(n * w)), bv = randv(size_t(n * w));
  Tensor a = putf(b, av, {n, w}, "a"), c = putf(b, bv, {n, w}, "b"), y = b.empty(DType::F32, {n, w}, "y");
  from_home("add", [&] { b.add(a, c, y); });
  std::vector<float> sum(av.size()), sw = av;
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = av[i] + bv[i];
  EXPECT(get(b, y) == sum, "add %s", d.on.c_str());
  Tensor planted = putf(*d.home, bv, {n, w}, "planted b");
  expect_planted(d, "add", [&] { b.add(a, planted, y); });

  from_home("swiglu", [&] { b.swiglu(a, c); });
  swiglu(sw.data(), bv.data(), int64_t(sw.size()));
  EXPECT(rel(get(b, a), sw) < 1e-6, "swiglu %s", d.on.c_str());
  expect_planted(d, "swiglu", [&] { b.swiglu(a, planted); });

  Tensor ids = b.empty(DType::I32, {n}, "ids");
  from_home("argmax", [&] { b.argmax(c, ids); });
  std::vector<int32_t> want(static_cast<size_t>(n));
  argmax_rows(bv.data(), n, w, want.data());
  EXPECT(get<int32_t>(b, ids) == want, "argmax %s", d.on.c_str());
  expect_planted(d, "argmax", [&] { b.argmax(planted, ids); });

  // copy: into this device from the current one, directly and staged through pinned host memory.
  for (const char* staged : {"0", "1"}) {
    setenv("MIXQ_CUDA_STAGED_COPIES", staged, 1);
    Tensor into = b.empty(DType::F32, {n, w}, "copy destination");
    from_home("copy", [&] { b.copy(planted, into); });
    EXPECT(get(b, into) == bv, "copy %s from %s (staged %s)", d.on.c_str(), d.home_name.c_str(), staged);
  }
  unsetenv("MIXQ_CUDA_STAGED_COPIES");
  Tensor elsewhere = d.third->empty(DType::F32, {n, w}, "copy elsewhere");
  const std::string what = "copy between two devices neither of which is " + d.b->device().str();
  test::expect_error(what.c_str(), [&] { b.copy(planted, elsewhere); },
                     {"copy", d.on.c_str(), d.home_name.c_str(), d.third->device().str().c_str()});
}

// Mixtral's GQA shape scaled down: 4 heads, 2 kv heads, head_dim 64, capacity 64, 5 cached tokens; 1 and 17 new.
void attention(Devices& d) {
  Backend& b = *d.b;
  const AttentionShape s{4, 2, 64, 0};
  const int64_t cap = 64, n_past = 5, kv = 2 * 64, qd = 4 * 64;
  for (const int64_t n : {int64_t(1), int64_t(17)}) {  // the split-K decode kernel; the tensor-core prefill
    std::vector<float> kc(size_t(cap * kv), 0.f), vc = kc;
    const std::vector<float> q = randv(size_t(n * qd)), k = randv(size_t(n * kv)), v = randv(size_t(n * kv));
    const std::vector<float> base_k = randv(size_t(n_past * kv)), base_v = randv(size_t(n_past * kv));
    std::vector<uint16_t> kh(kc.size(), 0), vh(vc.size(), 0);
    const auto round16 = [](float x) { return f16_to_f32(f32_to_f16(x)); };
    for (size_t i = 0; i < base_k.size(); ++i) {
      kh[i] = f32_to_f16(base_k[i]), vh[i] = f32_to_f16(base_v[i]);
      kc[i] = round16(base_k[i]), vc[i] = round16(base_v[i]);
    }
    for (size_t i = 0; i < k.size(); ++i) kc[size_t(n_past * kv) + i] = round16(k[i]), vc[size_t(n_past * kv) + i] = round16(v[i]);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    std::iota(pos.begin(), pos.end(), int32_t(n_past));
    Tensor kct = put(b, kh, {cap, kv}, DType::F16, "k_cache"), vct = put(b, vh, {cap, kv}, DType::F16, "v_cache");
    Tensor qt = putf(b, q, {n, qd}, "q"), kt = putf(b, k, {n, kv}, "k"), vt = putf(b, v, {n, kv}, "v");
    Tensor pt = put(b, pos, {n}, DType::I32, "positions"), out = b.empty(DType::F32, {n, qd}, "out");
    from_home("attention", [&] { b.attention(qt, kt, vt, kct, vct, pt, n_past, s, out); });
    std::vector<float> ref(size_t(n * qd));
    for (int64_t t = 0; t < n; ++t)
      attention_reference(&q[size_t(t * qd)], 1, n_past + t, kc.data(), vc.data(), s, &ref[size_t(t * qd)]);
    const double err = rel(get(b, out), ref);
    EXPECT(err < 3e-3, "attention %s, %lld tokens: rel err %g", d.on.c_str(), (long long)n, err);
    Tensor planted = d.home->empty(DType::F16, {cap, kv}, "planted v_cache");
    expect_planted(d, "attention", [&] { b.attention(qt, kt, vt, kct, planted, pt, n_past, s, out); });
  }
}

void linear_router(Devices& d) {
  Backend& b = *d.b;
  const int64_t in = 256, out = 128;
  for (const int group : {0, 128}) {  // bf16; AWQ int4 g128 (GEMV at 1 token, tensor-core GEMM at 33)
    const auto h = host_linear(group ? "awq" : "bf16", out, in, group);
    const auto w = b.prepare_linear(h->src);
    for (const int64_t n : {int64_t(1), int64_t(33)}) {
      const std::vector<float> x = randv(size_t(n * in));
      Tensor xt = putf(b, x, {n, in}, "x"), y = b.empty(DType::F32, {n, out}, "y");
      from_home("linear", [&] { b.linear(*w, xt, y); });
      std::vector<float> ref(size_t(n * out));
      linear_reference(*w, x.data(), n, ref.data());
      const double err = rel(get(b, y), ref), tol = group ? 2e-3 : 2e-5;
      EXPECT(err < tol, "linear %s %s, %lld tokens: rel err %g", w->kind().c_str(), d.on.c_str(), (long long)n, err);
    }
    Tensor x1 = putf(b, randv(size_t(in)), {1, in}, "x"), y1 = b.empty(DType::F32, {1, out}, "y");
    Tensor planted_y = d.home->empty(DType::F32, {1, out}, "planted y");
    expect_planted(d, "linear", [&] { b.linear(*w, x1, planted_y); });
    const auto home_w = d.home->prepare_linear(h->src);
    const std::string what = "linear " + w->kind() + " with a weight of " + d.home_name;
    const std::string lives = "lives on " + d.home_name;
    test::expect_error(what.c_str(), [&] { b.linear(*home_w, x1, y1); }, {"linear", d.on.c_str(), lives.c_str()});
  }

  const int64_t n = 5;
  const int E = 8, k = 2;
  const std::vector<float> logits = randv(size_t(n * E), 2.f);
  Tensor lt = putf(b, logits, {n, E}, "logits"), ids = b.empty(DType::I32, {n, k}, "ids"),
         wts = b.empty(DType::F32, {n, k}, "weights");
  from_home("router", [&] { b.router(lt, k, true, ids, wts); });
  std::vector<int32_t> ri(size_t(n * k));
  std::vector<float> rw(size_t(n * k));
  for (int64_t t = 0; t < n; ++t) router_topk(&logits[size_t(t * E)], E, k, true, &ri[size_t(t * k)], &rw[size_t(t * k)]);
  EXPECT(get<int32_t>(b, ids) == ri && rel(get(b, wts), rw) < 1e-6, "router %s", d.on.c_str());
  Tensor planted = d.home->empty(DType::I32, {n, k}, "planted ids");
  expect_planted(d, "router", [&] { b.router(lt, k, true, planted, wts); });
}

// 8 AWQ g64 experts top-2, hidden 64, inter 128: 1 token (4 slots: the routed GEMV) and 17 tokens (34 slots:
// moe_align_block_size + the grouped GEMM — the seed bug's own kernel); then the combine of two slot tensors.
void moe(Devices& d) {
  Backend& b = *d.b;
  const int E = 8, k = 2;
  const int64_t hidden = 64, inter = 128;
  std::vector<std::unique_ptr<HostLinear>> host;
  std::vector<ExpertWeights> experts(E), home_experts(E);
  std::vector<const Linear*> w1, w2, w3;
  ExpertSet set, home_set;
  for (int e = 0; e < E; ++e) {
    const std::string p = "e" + std::to_string(e) + ".";
    host.push_back(host_linear(p + "w1", inter, hidden, 64));
    host.push_back(host_linear(p + "w2", hidden, inter, 64));
    host.push_back(host_linear(p + "w3", inter, hidden, 64));
    ExpertWeights& ex = experts[size_t(e)];
    ex.w1 = b.prepare_linear(host[host.size() - 3]->src);
    ex.w2 = b.prepare_linear(host[host.size() - 2]->src);
    ex.w3 = b.prepare_linear(host[host.size() - 1]->src);
    home_experts[size_t(e)].w1 = d.home->prepare_linear(host[host.size() - 3]->src);
    home_experts[size_t(e)].w2 = d.home->prepare_linear(host[host.size() - 2]->src);
    home_experts[size_t(e)].w3 = d.home->prepare_linear(host[host.size() - 1]->src);
    w1.push_back(ex.w1.get()), w2.push_back(ex.w2.get()), w3.push_back(ex.w3.get());
    set.experts.push_back(&ex);
    home_set.experts.push_back(&home_experts[size_t(e)]);
  }
  for (const int64_t n : {int64_t(1), int64_t(17)}) {
    const std::vector<float> x = randv(size_t(n * hidden)), logits = randv(size_t(n * E), 2.f);
    std::vector<int32_t> ids(size_t(n * k));
    std::vector<float> wts(size_t(n * k));
    for (int64_t t = 0; t < n; ++t) router_topk(&logits[size_t(t * E)], E, k, true, &ids[size_t(t * k)], &wts[size_t(t * k)]);
    Tensor xt = putf(b, x, {n, hidden}, "x"), it = put(b, ids, {n, k}, DType::I32, "ids"),
           wt = putf(b, wts, {n, k}, "weights"), slots = b.empty(DType::F32, {n * k, hidden}, "slots");
    from_home("moe_experts", [&] { b.moe_experts(set, xt, it, wt, slots); });
    std::vector<float> ref(size_t(n * k * hidden));
    moe_experts_reference(w1, w2, w3, x.data(), n, hidden, ids.data(), wts.data(), k, ref.data());
    const std::vector<float> got = get(b, slots);
    const double err = rel(got, ref);
    EXPECT(err < 2e-3, "moe_experts %s, %lld tokens: rel err %g", d.on.c_str(), (long long)n, err);

    std::vector<int> owner(E);
    for (int e = 0; e < E; ++e) owner[size_t(e)] = e % 2;
    Tensor out = b.empty(DType::F32, {n, hidden}, "out");
    from_home("moe_combine", [&] { b.moe_combine({&slots, &slots}, owner, it, out); });
    std::vector<float> want(size_t(n * hidden));
    moe_combine_rows({got.data(), got.data()}, owner, ids.data(), n, k, hidden, want.data());
    EXPECT(get(b, out) == want, "moe_combine %s, %lld tokens", d.on.c_str(), (long long)n);

    Tensor planted = putf(*d.home, x, {n, hidden}, "planted x");
    expect_planted(d, "moe_experts", [&] { b.moe_experts(set, planted, it, wt, slots); });
    const std::string what = "moe_experts with experts of " + d.home_name + " " + d.on;
    const std::string lives = "lives on " + d.home_name;
    test::expect_error(what.c_str(), [&] { b.moe_experts(home_set, xt, it, wt, slots); },
                       {"moe_experts", d.on.c_str(), lives.c_str()});
    Tensor planted_slots = d.home->empty(DType::F32, {n * k, hidden}, "planted slots");
    expect_planted(d, "moe_combine", [&] { b.moe_combine({&slots, &planted_slots}, owner, it, out); });
  }
}

}  // namespace

int main() {
  test::skip_without_gpu();
  set_device_checks(true);
  const int gpus = cuda::visible_device_count();
  const auto dev = [](int index, int logical) { return Device{DeviceKind::Cuda, index, logical}; };
  // Logical device cuda:0/1 while cuda:0 is current (one GPU or more); cuda:1 while cuda:0 is current (two or more).
  std::vector<Device> under_test = {dev(0, 1)};
  if (gpus >= 2) under_test.push_back(dev(1, 0));
  else std::printf("  ops on cuda:1 while cuda:0 is current: skipped (needs 2 GPUs, %d visible); ran on cuda:0/1\n", gpus);
  for (const Device& d : under_test) {
    Devices ds{make_cuda_backend(d), make_cuda_backend(dev(0, 0)), make_cuda_backend(dev(d.index, d.logical + 1)),
               "on " + d.str(), "cuda:0"};
    std::printf("  every op on %s with cuda:0 current\n", d.str().c_str());
    embed_rms_rope(ds);
    elementwise_argmax_copy(ds);
    attention(ds);
    linear_router(ds);
    moe(ds);
  }
  return test::finish("test_cuda_seed_bug");
}
