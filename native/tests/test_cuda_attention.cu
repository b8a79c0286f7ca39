// The attention kernels (cuda/attention.h) straight from their launchers, against ops/attention.h's reference:
//   1. a decode step (KV append + split-K attention) captured ONCE as a CUDA graph and replayed at moving
//      positions — new q, k, v and positions copied into the same buffers before each replay, as the decode
//      graph does — each replay against the reference, each replay repeated bitwise;
//   2. small prefills (GQA 4/2, head_dim 64 and 128, odd token counts, a cached prefix, windows), kept small so
//      compute-sanitizer's memcheck and racecheck run it in seconds (gpu_check.sh).
// The reference reads the f16-rounded cache, as the kernels do; tolerances as in test_backend_ops.
#include <cstdint>
#include <limits>

#include "attention.h"
#include "ops/attention.h"
#include "test_cuda_util.h"

using mixq::cuda::AttentionDims;
using mixq::cuda::DeviceBuffer;

namespace {

std::mt19937 rng(11);

std::vector<float> randn(size_t n) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}
float round_f16(float x) { return __half2float(__float2half_rn(x)); }

// A pair of f16 caches [capacity, kv_dim] with their host mirror (f32 values of the f16 contents).
struct Caches {
  int64_t capacity, kv_dim;
  std::vector<float> k, v;
  DeviceBuffer dk, dv;
  Caches(int64_t cap, int64_t kv) : capacity(cap), kv_dim(kv) {
    k.assign(size_t(cap * kv), std::numeric_limits<float>::quiet_NaN());
    v = k;
    dk = DeviceBuffer(0, k.size() * 2);
    dv = DeviceBuffer(0, v.size() * 2);
  }
  // Rows [0, rows) random, the rest NaN (rows no token sees must never reach an output).
  void fill(int64_t rows) {
    const std::vector<float> rk = randn(size_t(rows * kv_dim)), rv = randn(size_t(rows * kv_dim));
    for (size_t i = 0; i < rk.size(); ++i) {
      k[i] = round_f16(rk[i]);
      v[i] = round_f16(rv[i]);
    }
    std::vector<__half> hk(k.size()), hv(v.size());
    for (size_t i = 0; i < k.size(); ++i) {
      hk[i] = __float2half_rn(k[i]);
      hv[i] = __float2half_rn(v[i]);
    }
    CUDA_CHECK(cudaMemcpy(dk.data(), hk.data(), hk.size() * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dv.data(), hv.data(), hv.size() * 2, cudaMemcpyHostToDevice));
  }
  void append(const std::vector<float>& nk, const std::vector<float>& nv, int64_t at) {
    for (size_t i = 0; i < nk.size(); ++i) {
      k[size_t(at * kv_dim) + i] = round_f16(nk[i]);
      v[size_t(at * kv_dim) + i] = round_f16(nv[i]);
    }
  }
};

double rel_err_f(const std::vector<float>& got, const std::vector<float>& ref) {
  std::vector<double> a(got.begin(), got.end()), b(ref.begin(), ref.end());
  return test::rel_err(a, b);
}

void test_decode_graph(int window) {
  const AttentionDims d{32, 8, 128, window, 4096};
  const mixq::AttentionShape s{d.heads, d.kv_heads, d.head_dim, window};
  const int64_t qd = int64_t(d.heads) * d.head_dim, kv = int64_t(d.kv_heads) * d.head_dim;
  Caches c(d.capacity, kv);
  c.fill(d.capacity);  // every row random: the kernels must still see only rows ≤ the position
  DeviceBuffer q(0, qd * 4), k(0, kv * 4), v(0, kv * 4), pos(0, 4), out(0, qd * 4),
      ws(0, mixq::cuda::attention_decode_workspace_bytes(1, d));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto step = [&] {
    mixq::cuda::launch_kv_append(k.as<float>(), v.as<float>(), pos.as<int32_t>(), 1, kv,
                                 d.capacity, c.dk.as<__half>(), c.dv.as<__half>(), stream);
    mixq::cuda::launch_attention_decode(q.as<float>(), c.dk.as<__half>(), c.dv.as<__half>(), pos.as<int32_t>(), 1, d,
                                        ws.as<float>(), out.as<float>(), stream);
  };
  // Capture at a position the replays never use: nothing of it may stick in the graph.
  const int32_t capture_pos = 7;
  CUDA_CHECK(cudaMemcpy(pos.data(), &capture_pos, 4, cudaMemcpyHostToDevice));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  step();
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));

  double worst = 0;
  int steps = 0, repeat_diffs = 0;
  for (int64_t lo : {int64_t(62), int64_t(1000), d.capacity - 4})  // across the chunk boundary at 64; to the end
    for (int64_t p = lo; p < lo + 4; ++p, ++steps) {
      const std::vector<float> hq = randn(size_t(qd)), hk = randn(size_t(kv)), hv = randn(size_t(kv));
      const int32_t hp = int32_t(p);
      std::vector<float> first;
      for (int run = 0; run < 2; ++run) {
        CUDA_CHECK(cudaMemcpyAsync(q.data(), hq.data(), qd * 4, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaMemcpyAsync(k.data(), hk.data(), kv * 4, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaMemcpyAsync(v.data(), hv.data(), kv * 4, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaMemcpyAsync(pos.data(), &hp, 4, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaGraphLaunch(exec, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        const std::vector<float> got = test::download<float>(out, size_t(qd));
        if (run == 0) first = got;
        else repeat_diffs += std::memcmp(first.data(), got.data(), got.size() * 4) != 0;
      }
      c.append(hk, hv, p);
      std::vector<float> ref(static_cast<size_t>(qd));
      mixq::attention_reference(hq.data(), 1, p, c.k.data(), c.v.data(), s, ref.data());
      const double err = rel_err_f(first, ref);
      worst = std::max(worst, err);
      EXPECT(err < 1e-4, "graph replay at position %lld, window %d: rel err %.3g", (long long)p, window, err);
    }
  // The appended rows landed where the positions said (the capture position's row was never written).
  const std::vector<__half> hk = test::download<__half>(c.dk, size_t(d.capacity * kv));
  int wrong = 0;
  for (size_t i = 0; i < hk.size(); ++i) wrong += __half2float(hk[i]) != c.k[i] && !std::isnan(c.k[i]);
  EXPECT(wrong == 0, "k cache after the replays: %d elements differ", wrong);
  EXPECT(repeat_diffs == 0, "%d replays not bitwise repeatable", repeat_diffs);
  std::printf("  ok  decode graph captured once, %d replays at moving positions (window %d): worst rel err %.3g\n",
              steps, window, worst);
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaStreamDestroy(stream));
}

void test_prefill(int head_dim, int64_t n, int64_t n_past, int window) {
  const AttentionDims d{4, 2, head_dim, window, 256};
  const mixq::AttentionShape s{d.heads, d.kv_heads, head_dim, window};
  const int64_t qd = int64_t(d.heads) * head_dim, kv = int64_t(d.kv_heads) * head_dim;
  Caches c(d.capacity, kv);
  c.fill(n_past);
  const std::vector<float> hq = randn(size_t(n * qd)), hk = randn(size_t(n * kv)), hv = randn(size_t(n * kv));
  std::vector<int32_t> hp(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) hp[size_t(t)] = int32_t(n_past + t);
  DeviceBuffer q = test::upload(hq), k = test::upload(hk), v = test::upload(hv), pos = test::upload(hp),
               out(0, n * qd * 4);
  test::poison(out);
  mixq::cuda::launch_kv_append(k.as<float>(), v.as<float>(), pos.as<int32_t>(), n, kv, d.capacity, c.dk.as<__half>(),
                               c.dv.as<__half>(), nullptr);
  const bool decode = mixq::cuda::attention_use_decode(n, d);
  DeviceBuffer ws(0, decode ? mixq::cuda::attention_decode_workspace_bytes(n, d) : 4);
  if (decode)
    mixq::cuda::launch_attention_decode(q.as<float>(), c.dk.as<__half>(), c.dv.as<__half>(), pos.as<int32_t>(), n, d,
                                        ws.as<float>(), out.as<float>(), nullptr);
  else
    mixq::cuda::launch_attention_prefill(q.as<float>(), c.dk.as<__half>(), c.dv.as<__half>(), pos.as<int32_t>(), n, d,
                                         out.as<float>(), nullptr);
  for (int64_t t = 0; t < n; ++t) c.append({hk.begin() + t * kv, hk.begin() + (t + 1) * kv},
                                           {hv.begin() + t * kv, hv.begin() + (t + 1) * kv}, n_past + t);
  std::vector<float> ref(size_t(n * qd));
  mixq::attention_reference(hq.data(), n, n_past, c.k.data(), c.v.data(), s, ref.data());
  const double err = rel_err_f(test::download<float>(out, size_t(n * qd)), ref);
  const double tol = decode ? 1e-4 : 3e-3;
  EXPECT(err < tol, "%s hd %d, %lld tokens after %lld, window %d: rel err %.3g (tol %.0e)", decode ? "decode" : "prefill",
         head_dim, (long long)n, (long long)n_past, window, err, tol);
  std::printf("  %s %s hd %d, %lld tokens after %lld, window %d: rel err %.3g\n", err < tol ? "ok " : "BAD",
              decode ? "decode" : "prefill", head_dim, (long long)n, (long long)n_past, window, err);
}

}  // namespace

int main() {
  test::skip_without_gpu();
  try {
    mixq::cuda::DeviceGuard guard(0);
    for (int window : {0, 100}) test_decode_graph(window);
    for (int hd : {64, 128})
      for (int64_t n : {int64_t(1), int64_t(5), int64_t(17), int64_t(70)})
        for (int64_t n_past : {int64_t(0), int64_t(37)})
          for (int window : {0, 16}) test_prefill(hd, n, n_past, window);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  return test::finish("test_cuda_attention");
}
