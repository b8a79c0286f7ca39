// dense_bench: the dense Linear kernels alone, for the figures quoted in docs/BENCHMARKS.md.
//   dense_bench gemv [--out N] [--in N] [--threads N] [--isa scalar|avx2|avx512] [--huge]
//       y = W·x for one token over a bf16 W [out, in] (default 43008 × 4096, 352 MB: larger than any cache);
//       best of 8, wall time → GB/s of weights read.
//   dense_bench gemm [--out N] [--in N] [--tokens N] [--isa ...]
//       one thread, [tokens, in] × Wᵀ; best of 5 by thread CPU time (robust on a shared machine) → GMAC/s.
#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "error.h"
#include "linear_dense.h"
#include "thread_pool.h"

using namespace mixq;

namespace {

double thread_cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double wall_ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || (std::string(argv[1]) != "gemv" && std::string(argv[1]) != "gemm")) {
    std::fprintf(stderr, "usage: dense_bench gemv|gemm [--out N] [--in N] [--tokens N] [--threads N] [--isa I] [--huge]\n");
    return 2;
  }
  const bool gemv = std::string(argv[1]) == "gemv";
  int64_t out = gemv ? 43008 : 2048, in = 4096, tokens = 64;
  int threads = 0;
  bool huge = false;
  DenseIsa isa = best_dense_isa();
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "dense_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") out = std::atoll(next());
    else if (a == "--in") in = std::atoll(next());
    else if (a == "--tokens") tokens = std::atoll(next());
    else if (a == "--threads") threads = std::atoi(next());
    else if (a == "--huge") huge = true;
    else if (a == "--isa") {
      const std::string v = next();
      isa = v == "scalar" ? DenseIsa::Scalar : v == "avx2" ? DenseIsa::Avx2 : DenseIsa::Avx512;
    } else {
      std::fprintf(stderr, "dense_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (!dense_isa_supported(isa)) {
    std::fprintf(stderr, "dense_bench: %s is not supported on this CPU\n", dense_isa_name(isa));
    return 1;
  }
  const size_t bytes = size_t(out) * size_t(in) * 2;
  const size_t align = size_t(2) << 20;
  void* w = std::aligned_alloc(align, (bytes + align - 1) / align * align);
  if (!w) {
    std::fprintf(stderr, "dense_bench: out of memory\n");
    return 1;
  }
  if (huge) madvise(w, bytes, MADV_HUGEPAGE);
  auto* w16 = static_cast<uint16_t*>(w);
  for (size_t i = 0; i < bytes / 2; ++i) w16[i] = f32_to_bf16(float(int(i % 1001) - 500) * 1e-4f);
  TensorView t;
  t.name = "w.weight";
  t.dtype = DType::BF16;
  t.shape = {out, in};
  t.data = w;
  t.nbytes = bytes;
  auto linear = make_dense_linear(t, isa);
  if (gemv) {
    ThreadPool pool(threads);
    std::vector<float> x(static_cast<size_t>(in), 0.01f), y(static_cast<size_t>(out));
    double best = 1e30;
    for (int r = 0; r < 8; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      linear->forward(x.data(), 1, y.data(), pool);
      best = std::min(best, wall_ms(t0));
    }
    std::printf("{\"kernel\":\"gemv\",\"isa\":\"%s\",\"out\":%lld,\"in\":%lld,\"threads\":%d,\"hugePages\":%s,"
                "\"ms\":%.3f,\"GBps\":%.2f}\n",
                dense_isa_name(isa), (long long)out, (long long)in, pool.size(), huge ? "true" : "false", best,
                double(bytes) / best / 1e6);
  } else {
    std::vector<float> x(size_t(tokens * in), 0.01f), y(size_t(tokens * out));
    double best = 1e30;
    for (int r = 0; r < 5; ++r) {
      const double t0 = thread_cpu_ms();
      dense_rows(isa, w, DType::BF16, in, out, 0, out, x.data(), tokens, y.data());
      best = std::min(best, thread_cpu_ms() - t0);
    }
    std::printf("{\"kernel\":\"gemm\",\"isa\":\"%s\",\"out\":%lld,\"in\":%lld,\"tokens\":%lld,\"threads\":1,"
                "\"cpuMs\":%.3f,\"GMACps\":%.2f}\n",
                dense_isa_name(isa), (long long)out, (long long)in, (long long)tokens, best,
                double(out) * double(in) * double(tokens) / best / 1e6);
  }
  std::free(w);
  return 0;
}
