// CUDA kernel timings, with the device-to-device copy bandwidth measured in the same run as the ceiling.
//   cuda_bench [--device N] [--quick]  → JSON on stdout, a readable table on stderr.
//   cuda_bench --profile C,R,SPLIT,W   → only 3 GEMV launches per Mixtral expert shape with that config
//                                           (for a profiler such as ncu), no timing.
//   cuda_bench --gemm-only              → only the prefill GEMM / grouped MoE sections (5, 6).
// The prefill GEMM is compared with cuBLAS's f16 GEMM (cublasGemmEx, f32 accumulation) at the same shapes in the
// same run; cuBLAS is loaded at run time (dlopen: $MIXQ_CUBLAS, else libcublas.so.13/.12/.so on the library
// path), so the bench builds without it and reports "cublas": null when it cannot be found.
// Method: cudaEvent timing around loops of back-to-back launches (warm-up first), median of several repeats;
// the GEMV rotates over enough weight copies (> 4× L2) that every call streams its weights from DRAM; inputs
// are random (never zeros). Bytes counted for the GEMV: qweight + qzeros + scales + x + y, each once.
#include <dlfcn.h>

// Attention (Mixtral shapes, f16 KV): decode at contexts 128 … 4096 as bytes per call vs time against the copy
// ceiling, and prefill of 2048 tokens in TFLOP/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attention.h"
#include "cuda_check.h"
#include "device_buffer.h"
#include "device_guard.h"
#include "expert_table.h"
#include "gemm_w4a16.h"
#include "gemv_w4a16.h"
#include "moe_align_block_size.h"
#include "rms_norm.h"

using mixq::DType;
using mixq::cuda::DeviceBuffer;
using mixq::cuda::GemvW4A16Config;

namespace {

cudaStream_t g_stream;

__global__ void empty_kernel() {}

// Random f16 in [-2, 2) from a hash of the index (device-side: gigabytes of KV cache filled in milliseconds).
__global__ void fill_f16_hash(__half* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2half(float(h >> 8) * (4.0f / 16777216.0f) - 2.0f);
  }
}

// Median over `repeats` of the mean time per call (ms) of `calls` back-to-back calls of fn(i).
double time_ms(const std::function<void(int)>& fn, int calls, int repeats = 9) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < std::min(calls, 20); ++i) fn(i);  // warm-up
  CUDA_CHECK(cudaStreamSynchronize(g_stream));
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    CUDA_CHECK(cudaEventRecord(a, g_stream));
    for (int i = 0; i < calls; ++i) fn(i);
    CUDA_CHECK(cudaEventRecord(b, g_stream));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / calls);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Same, but the `calls` launches are captured once into a CUDA graph and the graph is replayed: removes the
// host launch gaps, leaving the kernels' own time (what a decode step captured as a graph sees).
double time_graph_ms(const std::function<void(int)>& fn, int calls, int repeats = 9) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < calls; ++i) fn(i);
  CUDA_CHECK(cudaStreamEndCapture(g_stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double ms = time_ms([&](int) { CUDA_CHECK(cudaGraphLaunch(exec, g_stream)); }, 3, repeats) / calls;
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  return ms;
}

void fill_random(DeviceBuffer& buf, uint32_t seed, bool fp16_normal = false) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> host(buf.size() / 4);
  if (fp16_normal) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    auto* h = reinterpret_cast<__half*>(host.data());
    for (size_t i = 0; i < host.size() * 2; ++i) h[i] = __float2half(d(rng));
  } else {
    for (auto& v : host) v = rng();
  }
  CUDA_CHECK(cudaMemcpy(buf.data(), host.data(), host.size() * 4, cudaMemcpyHostToDevice));
}

void fill_scales(DeviceBuffer& buf, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(0.002f, 0.02f);
  std::vector<__half> host(buf.size() / 2);
  for (auto& v : host) v = __float2half(d(rng));
  CUDA_CHECK(cudaMemcpy(buf.data(), host.data(), host.size() * 2, cudaMemcpyHostToDevice));
}

// cuBLAS, resolved at run time (no link-time dependency): the f16 GEMM ceiling of the prefill section.
class Cublas {
 public:
  Cublas() {
    const char* env = std::getenv("MIXQ_CUBLAS");
    for (const char* name : {env, "libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      if (!name || lib_) continue;
      lib_ = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib_) name_ = name;
    }
    if (!lib_) return;
    create_ = reinterpret_cast<Create>(dlsym(lib_, "cublasCreate_v2"));
    destroy_ = reinterpret_cast<Destroy>(dlsym(lib_, "cublasDestroy_v2"));
    set_stream_ = reinterpret_cast<SetStream>(dlsym(lib_, "cublasSetStream_v2"));
    gemm_ex_ = reinterpret_cast<GemmEx>(dlsym(lib_, "cublasGemmEx"));
    if (!create_ || !destroy_ || !set_stream_ || !gemm_ex_ || create_(&handle_) != 0) handle_ = nullptr;
  }
  ~Cublas() {
    if (handle_) destroy_(handle_);
  }
  bool ok() const { return handle_ != nullptr; }
  const std::string& name() const { return name_; }
  // Y[n, out] f32 (row-major) = X[n, in] f16 · W[in, out] f16, f32 accumulation: column-major Yᵀ = Wᵀ · Xᵀ.
  void gemm(const __half* x, const __half* w, float* y, int n, int in, int out, cudaStream_t stream) {
    const float one = 1.0f, zero = 0.0f;
    constexpr int kOpN = 0, kR16F = 2, kR32F = 0, kCompute32F = 68, kAlgoDefault = -1;  // cuBLAS / library_types.h
    if (set_stream_(handle_, stream) != 0 ||
        gemm_ex_(handle_, kOpN, kOpN, out, n, in, &one, w, kR16F, out, x, kR16F, in, &zero, y, kR32F, out,
                 kCompute32F, kAlgoDefault) != 0)
      throw mixq::Error("cublasGemmEx failed (n=" + std::to_string(n) + ", in=" + std::to_string(in) +
                        ", out=" + std::to_string(out) + ")");
  }

 private:
  using Create = int (*)(void**);
  using Destroy = int (*)(void*);
  using SetStream = int (*)(void*, cudaStream_t);
  using GemmEx = int (*)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                         const void*, void*, int, int, int, int);
  void* lib_ = nullptr;
  void* handle_ = nullptr;
  std::string name_;
  Create create_ = nullptr;
  Destroy destroy_ = nullptr;
  SetStream set_stream_ = nullptr;
  GemmEx gemm_ex_ = nullptr;
};

// Y = X · W for the prefill shapes: the int4 GEMM (weights rotated over > 2× L2 of copies, as a layer's weights
// come from DRAM) against cuBLAS f16 at the same shape. FLOPs 2·n·in·out.
std::string bench_gemm(int device, const cudaDeviceProp& prop, Cublas& cublas) {
  struct Shape { int64_t in, out; const char* what; };
  const Shape shapes[] = {{4096, 14336, "w1/w3 (4096 -> 14336)"}, {14336, 4096, "w2 (14336 -> 4096)"},
                          {4096, 4096, "o_proj (4096 -> 4096)"}, {4096, 1024, "k/v_proj (4096 -> 1024)"}};
  const int group = 128;
  std::string json = ",\n  \"gemm_w4a16\": [";
  bool first = true;
  for (const Shape& s : shapes) {
    const size_t qw_bytes = s.in * s.out / 2, qz_bytes = (s.in / group) * s.out / 2, sc_bytes = (s.in / group) * s.out * 2;
    const size_t set_bytes = qw_bytes + qz_bytes + sc_bytes;
    const int sets = static_cast<int>(std::max<size_t>(2, 2 * size_t(prop.l2CacheSize) / set_bytes + 1));
    std::vector<DeviceBuffer> qw, qz, sc;
    for (int k = 0; k < sets; ++k) {
      qw.emplace_back(device, qw_bytes);
      qz.emplace_back(device, qz_bytes);
      sc.emplace_back(device, sc_bytes);
      fill_random(qw.back(), 700 + k);
      fill_random(qz.back(), 800 + k);
      fill_scales(sc.back(), 900 + k);
    }
    DeviceBuffer w16(device, s.in * s.out * 2);
    fill_random(w16, 11, true);
    for (int64_t n : {512, 2048}) {
      DeviceBuffer x(device, n * s.in * 2), y(device, n * s.out * 4);
      fill_random(x, 12, true);
      const double flop = 2.0 * n * s.in * s.out;
      const double ms = time_ms(
          [&](int i) {
            const int k = i % sets;
            mixq::cuda::launch_gemm_w4a16(x.as<__half>(), qw[k].as<int32_t>(), qz[k].as<int32_t>(), sc[k].as<__half>(),
                                          y.as<float>(), n, s.in, s.out, group, g_stream);
          },
          20);
      double cublas_ms = 0;
      if (cublas.ok())
        cublas_ms = time_ms([&](int) { cublas.gemm(x.as<__half>(), w16.as<__half>(), y.as<float>(), int(n), int(s.in),
                                                   int(s.out), g_stream); },
                            20);
      const double tflops = flop / (ms * 1e-3) / 1e12, cublas_tflops = cublas.ok() ? flop / (cublas_ms * 1e-3) / 1e12 : 0;
      std::fprintf(stderr, "gemm_w4a16 %-24s n=%-5lld tile=%-3d %8.1f us %6.1f TFLOP/s | cuBLAS f16 %8.1f us %6.1f TFLOP/s"
                           " | int4/cuBLAS time %.2f\n",
                   s.what, (long long)n, mixq::cuda::gemm_w4a16_row_tile(n, s.out, device), ms * 1e3, tflops,
                   cublas_ms * 1e3, cublas_tflops, cublas.ok() ? ms / cublas_ms : 0.0);
      json += std::string(first ? "" : ",") + "\n    {\"shape\": \"" + s.what + "\", \"n\": " + std::to_string(n) +
              ", \"in\": " + std::to_string(s.in) + ", \"out\": " + std::to_string(s.out) + ", \"group\": 128, " +
              "\"weight_sets\": " + std::to_string(sets) + ", \"us\": " + std::to_string(ms * 1e3) +
              ", \"tflops\": " + std::to_string(tflops) + ", \"cublas_f16_us\": " +
              (cublas.ok() ? std::to_string(cublas_ms * 1e3) : "null") + ", \"cublas_f16_tflops\": " +
              (cublas.ok() ? std::to_string(cublas_tflops) : "null") + "}";
      first = false;
    }
  }
  return json + "\n  ]";
}

// The grouped MoE of a Mixtral-8x7B layer's prefill: 2048 tokens × top-2 of 8 experts (hidden 4096, inter 14336,
// g128): moe_align_block_size + gate_up (w1, w3, SiLU·mul) + down (w2 × router weight into the slots).
// FLOPs: slots · 3 · 2 · hidden · inter. The cuBLAS line is the same work as 3 dense f16 GEMMs per expert at
// the mean rows per expert (tokens·top_k / E), routing and gathers left out.
std::string bench_moe(int device, Cublas& cublas) {
  const int E = 8, top_k = 2, group = 128;
  const int64_t tokens = 2048, hidden = 4096, inter = 14336, numel = tokens * top_k;
  std::vector<DeviceBuffer> bufs;
  std::vector<mixq::cuda::ExpertMatrices> table(E);
  for (int e = 0; e < E; ++e)
    for (int m = 0; m < 3; ++m) {
      const int64_t in = m == mixq::cuda::kDown ? inter : hidden, out = m == mixq::cuda::kDown ? hidden : inter;
      bufs.emplace_back(device, in * out / 2);
      fill_random(bufs.back(), 1000 + 3 * e + m);
      const int32_t* qw = bufs.back().as<int32_t>();
      bufs.emplace_back(device, in / group * out / 2);
      fill_random(bufs.back(), 2000 + 3 * e + m);
      const int32_t* qz = bufs.back().as<int32_t>();
      bufs.emplace_back(device, in / group * out * 2);
      fill_scales(bufs.back(), 3000 + 3 * e + m);
      table[size_t(e)].w[m] = {qw, qz, bufs.back().as<__half>()};
    }
  std::vector<int32_t> ids(numel);
  std::vector<float> weights(numel);
  std::mt19937 rng(5);
  for (int64_t t = 0; t < tokens; ++t) {
    ids[t * 2] = rng() % E;
    ids[t * 2 + 1] = (ids[t * 2] + 1 + rng() % (E - 1)) % E;
    weights[t * 2] = 0.6f;
    weights[t * 2 + 1] = 0.4f;
  }
  mixq::cuda::MoeRoutes r;
  r.numel = numel;
  r.top_k = top_k;
  r.num_experts = E;
  r.block_rows = mixq::cuda::gemm_w4a16_moe_block_rows(numel, E);
  const int64_t capacity = mixq::cuda::moe_align_capacity(numel, E, r.block_rows);
  DeviceBuffer d_table(device, sizeof(mixq::cuda::ExpertMatrices) * E), d_ids(device, numel * 4),
      d_w(device, numel * 4), sorted(device, capacity * 4),
      eids(device, mixq::cuda::moe_align_max_blocks(numel, E, r.block_rows) * 4), post(device, 4),
      x(device, tokens * hidden * 2), h(device, capacity * inter * 2), slots(device, numel * hidden * 4);
  CUDA_CHECK(cudaMemcpy(d_table.data(), table.data(), d_table.size(), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_ids.data(), ids.data(), numel * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_w.data(), weights.data(), numel * 4, cudaMemcpyHostToDevice));
  fill_random(x, 13, true);
  r.sorted_token_ids = sorted.as<int32_t>();
  r.expert_ids = eids.as<int32_t>();
  r.num_tokens_post_pad = post.as<int32_t>();
  const auto* tab = d_table.as<mixq::cuda::ExpertMatrices>();
  const auto align = [&](int) {
    mixq::cuda::launch_moe_align_block_size(d_ids.as<int32_t>(), numel, E, r.block_rows, sorted.as<int32_t>(),
                                            eids.as<int32_t>(), post.as<int32_t>(), g_stream);
  };
  const auto gate_up = [&](int) {
    mixq::cuda::launch_moe_gemm_w4a16_gate_up(x.as<__half>(), r, tab, h.as<__half>(), hidden, inter, group, g_stream);
  };
  const auto down = [&](int) {
    mixq::cuda::launch_moe_gemm_w4a16_down(h.as<__half>(), r, tab, d_w.as<float>(), slots.as<float>(), hidden, inter,
                                           group, g_stream);
  };
  align(0);
  const double align_ms = time_ms(align, 20), gate_up_ms = time_ms(gate_up, 10), down_ms = time_ms(down, 10);
  const double all_ms = time_ms([&](int i) { align(i); gate_up(i); down(i); }, 10);
  const double flop = double(numel) * 6 * hidden * inter;
  double cublas_ms = 0;
  if (cublas.ok()) {
    const int rows = int(numel / E);
    DeviceBuffer w16(device, hidden * inter * 2), xa(device, rows * std::max(hidden, inter) * 2),
        ya(device, rows * inter * 4);
    fill_random(w16, 14, true);
    fill_random(xa, 15, true);
    cublas_ms = time_ms([&](int) {
      for (int e = 0; e < E; ++e) {
        cublas.gemm(xa.as<__half>(), w16.as<__half>(), ya.as<float>(), rows, int(hidden), int(inter), g_stream);
        cublas.gemm(xa.as<__half>(), w16.as<__half>(), ya.as<float>(), rows, int(hidden), int(inter), g_stream);
        cublas.gemm(xa.as<__half>(), w16.as<__half>(), ya.as<float>(), rows, int(inter), int(hidden), g_stream);
      }
    }, 5);
  }
  std::fprintf(stderr,
               "moe grouped 2048 tokens top-2 of 8 (B=%d): align %.1f us + gate_up %.1f us + down %.1f us; all %.1f us "
               "= %.1f TFLOP/s | cuBLAS f16 3 GEMMs x 8 experts x %lld rows: %.1f us (%.1f TFLOP/s)\n",
               r.block_rows, align_ms * 1e3, gate_up_ms * 1e3, down_ms * 1e3, all_ms * 1e3, flop / (all_ms * 1e-3) / 1e12,
               (long long)(numel / E), cublas_ms * 1e3, cublas.ok() ? flop / (cublas_ms * 1e-3) / 1e12 : 0.0);
  return ",\n  \"moe_grouped\": {\"tokens\": 2048, \"experts\": 8, \"top_k\": 2, \"block_rows\": " +
         std::to_string(r.block_rows) + ", \"align_us\": " + std::to_string(align_ms * 1e3) + ", \"gate_up_us\": " +
         std::to_string(gate_up_ms * 1e3) + ", \"down_us\": " + std::to_string(down_ms * 1e3) + ", \"all_us\": " +
         std::to_string(all_ms * 1e3) + ", \"tflops\": " + std::to_string(flop / (all_ms * 1e-3) / 1e12) +
         ", \"cublas_f16_equivalent_us\": " + (cublas.ok() ? std::to_string(cublas_ms * 1e3) : "null") + "}";
}

std::string json_config(const GemvW4A16Config& c) {
  return "{\"cols_per_block\": " + std::to_string(c.cols_per_block) + ", \"rows_per_run\": " +
         std::to_string(c.rows_per_run) + ", \"split_k\": " + std::to_string(c.split_k) +
         ", \"words_per_thread\": " + std::to_string(c.words_per_thread) + "}";
}

}  // namespace

int main(int argc, char** argv) {
  int device = 0;
  bool quick = false, profile = false, gemm_only = false;
  GemvW4A16Config profile_cfg;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) device = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--gemm-only")) gemm_only = true;
    else if (!std::strcmp(argv[i], "--profile") && i + 1 < argc &&
             std::sscanf(argv[++i], "%d,%d,%d,%d", &profile_cfg.cols_per_block, &profile_cfg.rows_per_run,
                         &profile_cfg.split_k, &profile_cfg.words_per_thread) == 4) profile = true;
    else { std::fprintf(stderr, "usage: cuda_bench [--device N] [--quick] [--profile C,R,SPLIT,W] [--gemm-only]\n"); return 2; }
  }
  if (mixq::cuda::visible_device_count() == 0) {
    std::fprintf(stderr, "cuda_bench: no CUDA device visible\n");
    return 77;
  }
  try {
    mixq::cuda::DeviceGuard guard(device);
    CUDA_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::string json = "{\n  \"device\": \"" + std::string(prop.name) + "\", \"sms\": " +
                       std::to_string(prop.multiProcessorCount) + ", \"l2_bytes\": " + std::to_string(prop.l2CacheSize);
    std::fprintf(stderr, "%s: %d SMs, L2 %d MiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);

    if (profile) {
      for (auto [in, out] : {std::pair<int64_t, int64_t>{4096, 14336}, {14336, 4096}}) {
        DeviceBuffer qw(device, in * out / 2), qz(device, in / 128 * out / 2), sc(device, in / 128 * out * 2),
            x(device, in * 2), y(device, out * 2), ws(device, mixq::cuda::gemv_w4a16_workspace_bytes(out));
        fill_random(qw, 1);
        fill_random(qz, 2);
        fill_scales(sc, 3);
        fill_random(x, 4, true);
        CUDA_CHECK(cudaMemset(ws.data(), 0, ws.size()));
        const mixq::cuda::GemvW4A16Problem prob{x.as<__half>(), qw.as<int32_t>(), qz.as<int32_t>(), sc.as<__half>(),
                                                y.data()};
        for (int i = 0; i < 3; ++i)
          mixq::cuda::launch_gemv_w4a16(&prob, 1, DType::F16, in, out, 128, ws.data(), profile_cfg, g_stream);
        CUDA_CHECK(cudaStreamSynchronize(g_stream));
      }
      return 0;
    }
    // 1. The ceiling: a 1 GiB device-to-device copy, bytes read + bytes written.
    const size_t copy_bytes = size_t(1) << 30;
    DeviceBuffer src(device, copy_bytes), dst(device, copy_bytes);
    fill_random(src, 1);
    const double copy_ms = time_ms(
        [&](int) { CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), copy_bytes, cudaMemcpyDeviceToDevice, g_stream)); },
        5);
    const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
    std::fprintf(stderr, "copy D2D 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", copy_ms, copy_gbs);
    json += ",\n  \"copy_d2d_gbs\": " + std::to_string(copy_gbs);
    src = DeviceBuffer();
    dst = DeviceBuffer();

    // 5, 6. Prefill: the int4 tensor-core GEMM against cuBLAS f16, and the grouped MoE of one layer.
    {
      Cublas cublas;
      std::fprintf(stderr, "cuBLAS: %s\n", cublas.ok() ? cublas.name().c_str() : "not found (set MIXQ_CUBLAS)");
      json += ",\n  \"cublas\": " + (cublas.ok() ? "\"" + cublas.name() + "\"" : std::string("null"));
      json += bench_gemm(device, prop, cublas);
      json += bench_moe(device, cublas);
    }
    if (gemm_only) {
      std::fputs((json + "\n}\n").c_str(), stdout);
      return 0;
    }

    // 2. W4A16 GEMV, Mixtral-8x7B expert shapes, group 128, fp16 output.
    json += ",\n  \"gemv_w4a16\": [";
    struct Shape { int64_t in, out; const char* what; };
    const Shape shapes[] = {{4096, 14336, "w1/w3 (4096 -> 14336)"}, {14336, 4096, "w2 (14336 -> 4096)"},
                            {4096, 4096, "o_proj (4096 -> 4096)"}, {4096, 1024, "k/v_proj (4096 -> 1024)"}};
    const int group = 128;
    bool first_shape = true;
    for (const Shape& s : shapes) {
      const size_t qw_bytes = s.in * s.out / 2, qz_bytes = (s.in / group) * s.out / 2, sc_bytes = (s.in / group) * s.out * 2;
      const size_t set_bytes = qw_bytes + qz_bytes + sc_bytes;
      const int sets = static_cast<int>(std::max<size_t>(4, 4 * size_t(prop.l2CacheSize) / set_bytes + 1));
      std::vector<DeviceBuffer> qw, qz, sc;
      for (int k = 0; k < sets; ++k) {
        qw.emplace_back(device, qw_bytes);
        qz.emplace_back(device, qz_bytes);
        sc.emplace_back(device, sc_bytes);
        fill_random(qw.back(), 100 + k);
        fill_random(qz.back(), 200 + k);
        fill_scales(sc.back(), 300 + k);
      }
      DeviceBuffer x(device, s.in * 2), y(device, s.out * 2), ws(device, mixq::cuda::gemv_w4a16_workspace_bytes(s.out));
      fill_random(x, 5, true);
      CUDA_CHECK(cudaMemset(ws.data(), 0, ws.size()));
      const double bytes = double(set_bytes) + s.in * 2 + s.out * 2;
      const int calls = 200;

      auto launcher = [&](const GemvW4A16Config& cfg) {
        return [&, cfg](int i) {
          const int k = i % sets;
          const mixq::cuda::GemvW4A16Problem prob{x.as<__half>(), qw[k].as<int32_t>(), qz[k].as<int32_t>(),
                                                  sc[k].as<__half>(), y.data()};
          mixq::cuda::launch_gemv_w4a16(&prob, 1, DType::F16, s.in, s.out, group, ws.data(), cfg, g_stream);
        };
      };
      const GemvW4A16Config def = mixq::cuda::gemv_w4a16_default_config(s.in, s.out, group, device);
      const double def_ms = time_ms(launcher(def), calls);
      const double def_graph_ms = time_graph_ms(launcher(def), calls);
      // The guarded entry (pointer checks + guard + launch): host cost per call, measured with the GPU busy.
      const double entry_ms = time_ms(
          [&](int i) {
            const int k = i % sets;
            mixq::cuda::gemv_w4a16(x.as<__half>(), qw[k].as<int32_t>(), qz[k].as<int32_t>(), sc[k].as<__half>(),
                                   y.data(), DType::F16, s.in, s.out, group, ws.data(), ws.size(), g_stream);
          },
          calls);
      auto host0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 1000; ++i)
        mixq::cuda::gemv_w4a16(x.as<__half>(), qw[0].as<int32_t>(), qz[0].as<int32_t>(), sc[0].as<__half>(), y.data(),
                               DType::F16, s.in, s.out, group, ws.data(), ws.size(), g_stream);
      const double entry_host_us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - host0).count() / 1000;
      CUDA_CHECK(cudaStreamSynchronize(g_stream));

      std::fprintf(stderr,
                   "gemv %-26s %5.1f MB: default W=%d C=%d R=%d split=%-2d %7.2f us %6.0f GB/s (%4.1f%% of copy) | graph "
                   "%7.2f us %6.0f GB/s (%4.1f%%) | entry %7.2f us, host %.2f us/call\n",
                   s.what, bytes / 1e6, def.words_per_thread, def.cols_per_block, def.rows_per_run, def.split_k, def_ms * 1e3,
                   bytes / (def_ms * 1e-3) / 1e9, 100 * bytes / (def_ms * 1e-3) / 1e9 / copy_gbs, def_graph_ms * 1e3,
                   bytes / (def_graph_ms * 1e-3) / 1e9, 100 * bytes / (def_graph_ms * 1e-3) / 1e9 / copy_gbs,
                   entry_ms * 1e3, entry_host_us);
      json += std::string(first_shape ? "" : ",") + "\n    {\"shape\": \"" + s.what + "\", \"in\": " +
              std::to_string(s.in) + ", \"out\": " + std::to_string(s.out) + ", \"group\": 128, \"bytes\": " +
              std::to_string(bytes) + ", \"weight_sets\": " + std::to_string(sets) + ", \"default\": " +
              json_config(def) + ", \"us\": " + std::to_string(def_ms * 1e3) + ", \"gbs\": " +
              std::to_string(bytes / (def_ms * 1e-3) / 1e9) + ", \"frac_of_copy\": " +
              std::to_string(bytes / (def_ms * 1e-3) / 1e9 / copy_gbs) + ", \"graph_us\": " +
              std::to_string(def_graph_ms * 1e3) + ", \"graph_frac_of_copy\": " +
              std::to_string(bytes / (def_graph_ms * 1e-3) / 1e9 / copy_gbs) + ", \"entry_us\": " +
              std::to_string(entry_ms * 1e3) + ", \"entry_host_us\": " + std::to_string(entry_host_us) +
              ", \"sweep\": [";
      first_shape = false;
      // Sweep of the work split, to check the default against its neighbours.
      bool first_cfg = true;
      if (!quick)
        for (int W : {2, 4})
        for (int C : {2, 4, 8})
          for (int R : {16, 32})
            for (int split : {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}) {
              if (W == 2 && R != 16) continue;
              const GemvW4A16Config cfg{C, R, split, W};
              const double ms = time_ms(launcher(cfg), calls, 5);
              json += std::string(first_cfg ? "" : ", ") + "{\"cfg\": " + json_config(cfg) + ", \"us\": " +
                      std::to_string(ms * 1e3) + "}";
              first_cfg = false;
            }
      json += "]}";
    }
    json += "\n  ]";

    // 2b. Batched GEMV: the MoE decode step's matrices of one shape in one launch (top-2 experts: w1 and w3 of
    // both = 4 × 4096→14336, then both w2 = 2 × 14336→4096), against the same products launched one by one.
    json += ",\n  \"gemv_w4a16_batched\": [";
    {
      struct BatchCase { int64_t in, out; int count; const char* what; };
      const BatchCase cases[] = {{4096, 14336, 4, "4 x w1/w3"}, {14336, 4096, 2, "2 x w2"}};
      bool first = true;
      for (const BatchCase& b : cases) {
        const size_t qw_bytes = b.in * b.out / 2, qz_bytes = (b.in / group) * b.out / 2,
                     sc_bytes = (b.in / group) * b.out * 2, set_bytes = qw_bytes + qz_bytes + sc_bytes;
        // Rotate over weight sets of `count` matrices each, > 4× L2 in all.
        const int sets = static_cast<int>(std::max<size_t>(2, 4 * size_t(prop.l2CacheSize) / (set_bytes * b.count) + 1));
        std::vector<DeviceBuffer> qw, qz, sc, ys;
        for (int k = 0; k < sets * b.count; ++k) {
          qw.emplace_back(device, qw_bytes);
          qz.emplace_back(device, qz_bytes);
          sc.emplace_back(device, sc_bytes);
          fill_random(qw.back(), 400 + k);
          fill_random(qz.back(), 500 + k);
          fill_scales(sc.back(), 600 + k);
        }
        for (int j = 0; j < b.count; ++j) ys.emplace_back(device, b.out * 2);
        DeviceBuffer x(device, b.in * 2), ws(device, mixq::cuda::gemv_w4a16_workspace_bytes(b.out, b.count));
        fill_random(x, 9, true);
        CUDA_CHECK(cudaMemset(ws.data(), 0, ws.size()));
        auto problems_of = [&](int set) {
          std::vector<mixq::cuda::GemvW4A16Problem> ps;
          for (int j = 0; j < b.count; ++j) {
            const int k = set * b.count + j;
            ps.push_back({x.as<__half>(), qw[k].as<int32_t>(), qz[k].as<int32_t>(), sc[k].as<__half>(), ys[j].data()});
          }
          return ps;
        };
        const auto cfg_batch = mixq::cuda::gemv_w4a16_default_config(b.in, b.out, group, device, b.count);
        const auto cfg_one = mixq::cuda::gemv_w4a16_default_config(b.in, b.out, group, device, 1);
        auto batched = [&](int i) {
          const auto ps = problems_of(i % sets);
          mixq::cuda::launch_gemv_w4a16(ps.data(), b.count, DType::F16, b.in, b.out, group, ws.data(), cfg_batch, g_stream);
        };
        auto one_by_one = [&](int i) {
          const auto ps = problems_of(i % sets);
          for (int j = 0; j < b.count; ++j)
            mixq::cuda::launch_gemv_w4a16(&ps[j], 1, DType::F16, b.in, b.out, group, ws.data(), cfg_one, g_stream);
        };
        const double bytes = double(set_bytes) * b.count + b.in * 2 + b.out * 2.0 * b.count;
        const double t_batch = time_graph_ms(batched, 50), t_single = time_graph_ms(one_by_one, 50);
        std::fprintf(stderr,
                     "gemv batched %-10s %6.1f MB: one launch (C=%d R=%d split=%d) %7.2f us %6.0f GB/s (%4.1f%% of copy) | "
                     "%d launches %7.2f us (graph replay)\n",
                     b.what, bytes / 1e6, cfg_batch.cols_per_block, cfg_batch.rows_per_run, cfg_batch.split_k,
                     t_batch * 1e3, bytes / (t_batch * 1e-3) / 1e9, 100 * bytes / (t_batch * 1e-3) / 1e9 / copy_gbs,
                     b.count, t_single * 1e3);
        json += std::string(first ? "" : ",") + "\n    {\"case\": \"" + b.what + "\", \"bytes\": " +
                std::to_string(bytes) + ", \"config\": " + json_config(cfg_batch) + ", \"graph_us\": " +
                std::to_string(t_batch * 1e3) + ", \"gbs\": " + std::to_string(bytes / (t_batch * 1e-3) / 1e9) +
                ", \"frac_of_copy\": " + std::to_string(bytes / (t_batch * 1e-3) / 1e9 / copy_gbs) +
                ", \"separate_launches_graph_us\": " + std::to_string(t_single * 1e3) + "}";
        first = false;
      }
    }
    json += "\n  ]";

    // 2c. The launch floor: an empty kernel, back to back and in a graph (what any kernel pays).
    {
      const double t_plain = time_ms([&](int) { empty_kernel<<<132, 256, 0, g_stream>>>(); }, 200);
      const double t_graph = time_graph_ms([&](int) { empty_kernel<<<132, 256, 0, g_stream>>>(); }, 200);
      std::fprintf(stderr, "empty kernel (132 x 256 threads): %.2f us back to back, %.2f us in a graph\n", t_plain * 1e3,
                   t_graph * 1e3);
      json += ",\n  \"empty_kernel_us\": " + std::to_string(t_plain * 1e3) + ", \"empty_kernel_graph_us\": " +
              std::to_string(t_graph * 1e3);
    }

    // 2d. Attention, Mixtral-8x7B shapes (32 heads, 8 kv heads, hd 128), f16 KV cache of capacity 4096.
    //   decode: one token at position ctx − 1 (KV append + split-K + merge), in a graph as the decode step runs it;
    //     rotating over enough caches (> 4× L2 of active rows) that every call reads its rows from DRAM. Bytes
    //     counted: K and V rows [0, ctx) + q, k, v in + out + the split-K partials written and read back.
    //   prefill: 2048 tokens from position 0 (causal): 4·heads·hd·n²/2 FLOP on the tensor cores.
    {
      const mixq::cuda::AttentionDims dims{32, 8, 128, 0, 4096};
      const int64_t kv = int64_t(dims.kv_heads) * dims.head_dim, qd = int64_t(dims.heads) * dims.head_dim;
      const size_t cache_bytes = size_t(dims.capacity) * kv * 2;
      json += ",\n  \"attention_decode\": [";
      bool first = true;
      for (int64_t ctx : {128, 512, 1024, 2048, 4096}) {
        const double active = 2.0 * ctx * kv * 2;  // K and V rows read
        const int sets = static_cast<int>(std::min<double>(512, std::max<double>(2, 4.0 * prop.l2CacheSize / active + 1)));
        std::vector<DeviceBuffer> kc, vc;
        for (int i = 0; i < sets; ++i) {
          kc.emplace_back(device, cache_bytes);
          vc.emplace_back(device, cache_bytes);
          fill_f16_hash<<<1024, 256, 0, g_stream>>>(kc.back().as<__half>(), cache_bytes / 2, 17u + i);
          fill_f16_hash<<<1024, 256, 0, g_stream>>>(vc.back().as<__half>(), cache_bytes / 2, 91u + i);
          CUDA_CHECK_LAUNCH();
        }
        DeviceBuffer q(device, qd * 4), k(device, kv * 4), v(device, kv * 4), out(device, qd * 4), pos(device, 4),
            ws(device, mixq::cuda::attention_decode_workspace_bytes(1, dims));
        {
          std::mt19937 rng(5);
          std::normal_distribution<float> nd(0.f, 1.f);
          std::vector<float> hq(qd), hk(kv);
          for (auto& x : hq) x = nd(rng);
          for (auto& x : hk) x = nd(rng);
          CUDA_CHECK(cudaMemcpy(q.data(), hq.data(), qd * 4, cudaMemcpyHostToDevice));
          CUDA_CHECK(cudaMemcpy(k.data(), hk.data(), kv * 4, cudaMemcpyHostToDevice));
          CUDA_CHECK(cudaMemcpy(v.data(), hk.data(), kv * 4, cudaMemcpyHostToDevice));
          const int32_t p = int32_t(ctx - 1);
          CUDA_CHECK(cudaMemcpy(pos.data(), &p, 4, cudaMemcpyHostToDevice));
        }
        auto call = [&](int i) {
          const int s = i % sets;
          mixq::cuda::launch_kv_append(k.as<float>(), v.as<float>(), pos.as<int32_t>(), 1, kv, dims.capacity,
                                       kc[s].as<__half>(), vc[s].as<__half>(), g_stream);
          mixq::cuda::launch_attention_decode(q.as<float>(), kc[s].as<__half>(), vc[s].as<__half>(), pos.as<int32_t>(),
                                              1, dims, ws.as<float>(), out.as<float>(), g_stream);
        };
        const double chunks = double((ctx + 63) / 64);
        const double bytes = active + 2.0 * qd * 4 + 2.0 * kv * 4 + 2.0 * kv * 2 + 2.0 * chunks * dims.heads * (dims.head_dim + 2) * 4;
        const double ms = time_ms(call, 200), graph_ms = time_graph_ms(call, 200);
        std::fprintf(stderr,
                     "attention decode ctx %-5lld %6.2f MB/call: %6.2f us back to back, %6.2f us in a graph = %6.0f GB/s "
                     "(%4.1f%% of copy); floor at copy bandwidth %5.2f us\n",
                     (long long)ctx, bytes / 1e6, ms * 1e3, graph_ms * 1e3, bytes / (graph_ms * 1e-3) / 1e9,
                     100 * bytes / (graph_ms * 1e-3) / 1e9 / copy_gbs, bytes / (copy_gbs * 1e9) * 1e6);
        json += std::string(first ? "" : ", ") + "{\"ctx\": " + std::to_string(ctx) + ", \"bytes\": " +
                std::to_string(bytes) + ", \"us\": " + std::to_string(ms * 1e3) + ", \"graph_us\": " +
                std::to_string(graph_ms * 1e3) + ", \"gbs\": " + std::to_string(bytes / (graph_ms * 1e-3) / 1e9) +
                ", \"frac_of_copy\": " + std::to_string(bytes / (graph_ms * 1e-3) / 1e9 / copy_gbs) + "}";
        first = false;
      }
      json += "]";
      // Prefill 2048 from position 0.
      {
        const int64_t n = 2048;
        DeviceBuffer kc(device, cache_bytes), vc(device, cache_bytes), q(device, n * qd * 4), k(device, n * kv * 4),
            v(device, n * kv * 4), out(device, n * qd * 4), pos(device, n * 4);
        std::vector<int32_t> hp(n);
        for (int64_t t = 0; t < n; ++t) hp[size_t(t)] = int32_t(t);
        CUDA_CHECK(cudaMemcpy(pos.data(), hp.data(), n * 4, cudaMemcpyHostToDevice));
        std::vector<float> hx(size_t(n * qd));
        std::mt19937 rng(6);
        std::normal_distribution<float> nd(0.f, 1.f);
        for (auto& x : hx) x = nd(rng);
        CUDA_CHECK(cudaMemcpy(q.data(), hx.data(), n * qd * 4, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(k.data(), hx.data(), n * kv * 4, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(v.data(), hx.data() + n * kv, n * kv * 4, cudaMemcpyHostToDevice));
        mixq::cuda::launch_kv_append(k.as<float>(), v.as<float>(), pos.as<int32_t>(), n, kv, dims.capacity,
                                     kc.as<__half>(), vc.as<__half>(), g_stream);
        const double ms = time_ms(
            [&](int) {
              mixq::cuda::launch_attention_prefill(q.as<float>(), kc.as<__half>(), vc.as<__half>(), pos.as<int32_t>(), n,
                                                   dims, out.as<float>(), g_stream);
            },
            20);
        const double flop = 4.0 * dims.heads * dims.head_dim * double(n) * double(n + 1) / 2;
        const double bytes = 2.0 * n * qd * 4 + 2.0 * n * kv * 2;  // q in, out, K and V once
        std::fprintf(stderr, "attention prefill 2048 (causal): %7.1f us, %6.1f TFLOP/s (f16 mma), %5.0f GB/s min traffic\n",
                     ms * 1e3, flop / (ms * 1e-3) / 1e12, bytes / (ms * 1e-3) / 1e9);
        json += ",\n  \"attention_prefill\": {\"tokens\": 2048, \"us\": " + std::to_string(ms * 1e3) +
                ", \"tflops\": " + std::to_string(flop / (ms * 1e-3) / 1e12) + ", \"bytes\": " +
                std::to_string(bytes) + "}";
      }
    }

    // 3. rms_norm, hidden 4096, fp16 activations, bf16 weight.
    {
      const int64_t hidden = 4096;
      json += ",\n  \"rms_norm\": [";
      bool first = true;
      for (int64_t rows : {1, 16, 512}) {
        DeviceBuffer xb(device, rows * hidden * 2), wb(device, hidden * 2), yb(device, rows * hidden * 2);
        fill_random(xb, 7, true);
        fill_random(wb, 8, true);
        const double ms = time_ms(
            [&](int) {
              mixq::cuda::launch_rms_norm(xb.data(), wb.data(), yb.data(), rows, hidden, 1e-5f, DType::F16, DType::BF16,
                                          g_stream);
            },
            200);
        const double gbs = (2.0 * rows * hidden * 2 + hidden * 2) / (ms * 1e-3) / 1e9;
        std::fprintf(stderr, "rms_norm rows=%-4lld hidden=4096 f16: %6.2f us (%5.0f GB/s)\n", (long long)rows, ms * 1e3, gbs);
        json += std::string(first ? "" : ", ") + "{\"rows\": " + std::to_string(rows) + ", \"us\": " +
                std::to_string(ms * 1e3) + ", \"gbs\": " + std::to_string(gbs) + "}";
        first = false;
      }
      json += "]";
    }

    // 4. moe_align_block_size, Mixtral routing (8 experts, top-2), block 64.
    {
      json += ",\n  \"moe_align_block_size\": [";
      bool first = true;
      for (int tokens : {1, 16, 512, 4096}) {
        const int top_k = 2, E = 8, B = 64;
        const int64_t numel = int64_t(tokens) * top_k;
        std::vector<int32_t> ids(numel);
        std::mt19937 rng(tokens);
        for (int t = 0; t < tokens; ++t) {
          ids[t * 2] = rng() % E;
          ids[t * 2 + 1] = (ids[t * 2] + 1 + rng() % (E - 1)) % E;
        }
        DeviceBuffer topk(device, numel * 4), sorted(device, mixq::cuda::moe_align_capacity(numel, E, B) * 4),
            eids(device, mixq::cuda::moe_align_max_blocks(numel, E, B) * 4), post(device, 4);
        CUDA_CHECK(cudaMemcpy(topk.data(), ids.data(), numel * 4, cudaMemcpyHostToDevice));
        const auto body = [&](int) {
          mixq::cuda::launch_moe_align_block_size(topk.as<int32_t>(), numel, E, B, sorted.as<int32_t>(),
                                                  eids.as<int32_t>(), post.as<int32_t>(), g_stream);
        };
        const double ms = time_ms(body, 200);
        const double graph_ms = time_graph_ms(body, 100);
        std::fprintf(stderr, "moe_align tokens=%-5d top2 E=8 B=64: %6.2f us (graph %6.2f us)\n", tokens, ms * 1e3,
                     graph_ms * 1e3);
        json += std::string(first ? "" : ", ") + "{\"tokens\": " + std::to_string(tokens) + ", \"us\": " +
                std::to_string(ms * 1e3) + ", \"graph_us\": " + std::to_string(graph_ms * 1e3) + "}";
        first = false;
      }
      json += "]";
    }
    json += "\n}\n";
    std::fputs(json.c_str(), stdout);
    CUDA_CHECK(cudaStreamDestroy(g_stream));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
