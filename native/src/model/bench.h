// Prefill/decode throughput of the engine on a model folder or on synthetic weights of a named
// shape (random bf16 built in memory, no file), with the machine's copy bandwidth measured in the
// same run. Field names map onto server/src/native.ts NativeBenchResult.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/tensor.h"
#include "engine.h"

namespace mixq {

struct BenchOptions {
  std::string model_dir;     // a model folder, or empty with `synthetic`
  std::string synthetic;     // "mixtral-8x7b" | "qwen3-coder-30b-a3b" | "tiny" (the fixture's shapes)
  int layers = 0;            // synthetic: decoder layers (0 = the shape's own: synthetic_config)
  std::string weights = "bf16";  // synthetic: "bf16" | "awq" (int4 g128 GEMM layout for attention + experts)
  int prefill_tokens = 0;    // 0 = 128 for a folder / tiny, 32 for mixtral-8x7b / qwen3-coder-30b-a3b
  int decode_tokens = 0;     // 0 = 64 for a folder / tiny, 8 for mixtral-8x7b / qwen3-coder-30b-a3b
  int threads = 0;           // 0 = all hardware threads
  std::string device = "cpu";
  std::vector<std::string> devices;  // several devices (EngineOptions::devices)
  std::string placement = "layer";
  std::vector<double> split;
  size_t memcpy_bytes = size_t(1) << 30;  // buffer size of the bandwidth probe
  uint64_t seed = 1234;
  bool profile = false;      // time every op of the measured prefill + decode (BenchResult::profile)
};

struct BenchResult {
  double prefill_tokens_per_sec = 0;
  double decode_tokens_per_sec = 0;
  int prefill_tokens = 0;
  int decode_tokens = 0;
  double decode_ms_per_layer = 0;       // mean wall ms of one decoder layer per decoded token
  double decode_head_ms = 0;            // embedding + final norm + lm_head per decoded token
  std::string decode_step_mode;
  std::map<std::string, double> device_copy_gbps;  // per GPU of the run: its own copy ceiling (read + write)         // Context::step_mode() after the decode loop ("graph", "ops", …)
  std::vector<double> decode_layer_ms;  // per layer, mean over decoded tokens
  double weight_bytes_per_token = 0;    // attention + router + top-k experts per layer + lm_head
  double memcpy_gbps = 0;               // read + write bytes per second of a large memcpy, GB/s (1e9)
  double bandwidth_ratio = 0;           // weight_bytes_per_token * decode tok/s / memcpy bandwidth
  double weight_gbps = 0;               // weight_bytes_per_token * decode tok/s, GB/s
  double peak_rss_bytes = 0;
  double device_peak_bytes = 0;    // the busiest device's arena at its peak (weights + KV cache + activations)
  double device_weight_bytes = 0;  // the planner's bytes for that device (weights + KV cache)
  double load_ms = 0;
  std::string description;
  std::vector<std::string> cpu_features;
  int threads = 0;
  bool profiled = false;
  ModelProfile profile;                 // with BenchOptions::profile: the measured prefill + decode (not the warm-up)
};

BenchResult run_bench(const BenchOptions& opts);

// Best-of-`repeats` multi-threaded memcpy over `bytes`: returns (read + write) GB/s.
double measure_memcpy_gbps(size_t bytes, int threads, int repeats = 5);
// The copy ceiling of one device ("cpu", "cuda:0", "cuda:0/1"): the host memcpy for the CPU, a copy within the
// GPU's memory for a GPU (read + write GB/s, best of 5).
double measure_device_copy_gbps(const std::string& device, size_t bytes, int threads = 0);
// Peak resident set (VmHWM), bytes.
size_t peak_rss_bytes();

// One JSON object; with a profile, "profile" holds profile_json() with the memcpy bandwidth as each CPU device's ceiling.
std::string bench_result_json(const BenchResult& r);

// ---- synthetic weights (run_bench --synthetic, awq_bench) ----------------------------------------------------

// The config of a named synthetic model, no quantization_config:
// - "mixtral-8x7b": hidden 4096, intermediate 14336, 32/8 heads, 8 experts top-2, vocab 32000; layers 0 = 2;
// - "qwen3-coder-30b-a3b": qwen3_moe, hidden 2048, 32/4 heads of 128 (q width 4096), per-head q/k norms, 128 experts
//   of 768 top-8 (norm_topk_prob), vocab 151936, untied lm_head, rope_theta 1e7, eps 1e-6; layers 0 = 48;
// - "tiny": the Mixtral fixture's shapes (8 experts top-2); layers 0 = 4.
ModelConfig synthetic_config(const std::string& name, int layers);

struct HugeFree {
  void operator()(void* p) const;
};
using HugeBuffer = std::unique_ptr<void, HugeFree>;

// Owns synthetic tensors built in memory; the TensorViews in `tensors` point into `buffers` (2 MiB-aligned and,
// unless huge_pages is false, advised for transparent huge pages when ≥ 4 MiB). Random fills run on `threads` threads
// from xorshift streams seeded by `seed`, which every random tensor advances: same seed, same tensors.
struct SyntheticStore {
  std::vector<HugeBuffer> buffers;
  std::map<std::string, TensorView> tensors;
  int threads = 1;
  uint64_t seed = 0;
  bool huge_pages = true;  // false: 4 KiB pages (MADV_NOHUGEPAGE), as an mmapped checkpoint file gets

  TensorView& alloc(const std::string& name, DType dt, std::vector<int64_t> shape);  // uninitialised bytes
  // bf16 values uniform in ±scale.
  void add_bf16(const std::string& name, std::vector<int64_t> shape, float scale);
  void add_const_bf16(const std::string& name, std::vector<int64_t> shape, float value);
  // int32 words: random (8 random nibbles each, an AWQ qweight) or all equal to `value`.
  void add_words(const std::string& name, std::vector<int64_t> shape, bool random, uint32_t value);
  void add_const_f16(const std::string& name, std::vector<int64_t> shape, float value);
  // A Linear [out, in] named `prefix`: `.weight` bf16 uniform in ±scale when awq_group <= 0; else AWQ GEMM int4
  // g`awq_group`: `.qweight` [in, out/8] random nibbles, `.qzeros` all 8, `.scales` fp16 scale/8 (so the
  // dequantized weights spread over about ±scale, like the bf16 case).
  void add_linear(const std::string& prefix, int64_t out, int64_t in, float scale, int awq_group);
  const TensorView* find(const std::string& name) const;  // nullptr when absent
};

// The named synthetic model (synthetic_config) with random weights in a SyntheticStore, placed by `eo`: weights "bf16"
// (every Linear bf16) or "awq" (attention and experts AWQ int4 g128; embedding, norms, router and lm_head bf16).
std::shared_ptr<Model> make_synthetic_model(const std::string& name, int layers, const std::string& weights,
                                            const EngineOptions& eo, uint64_t seed);

}  // namespace mixq
