// Prefill/decode throughput of the engine on a model folder or on synthetic weights of a named
// shape (random bf16 built in memory, no file), with the machine's copy bandwidth measured in the
// same run. Field names map onto server/src/native.ts NativeBenchResult.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mixq {

struct BenchOptions {
  std::string model_dir;     // a model folder, or empty with `synthetic`
  std::string synthetic;     // "mixtral-8x7b" | "tiny" (the fixture's shapes)
  int layers = 0;            // synthetic: decoder layers (0 = 2 for mixtral-8x7b, 4 for tiny)
  std::string weights = "bf16";  // synthetic: "bf16" | "awq" (int4 g128 GEMM layout for attention + experts)
  int prefill_tokens = 0;    // 0 = 128 for a folder / tiny, 32 for mixtral-8x7b
  int decode_tokens = 0;     // 0 = 64 for a folder / tiny, 8 for mixtral-8x7b
  int threads = 0;           // 0 = all hardware threads
  std::string device = "cpu";
  size_t memcpy_bytes = size_t(1) << 30;  // buffer size of the bandwidth probe
  uint64_t seed = 1234;
};

struct BenchResult {
  double prefill_tokens_per_sec = 0;
  double decode_tokens_per_sec = 0;
  int prefill_tokens = 0;
  int decode_tokens = 0;
  double decode_ms_per_layer = 0;       // mean wall ms of one decoder layer per decoded token
  double decode_head_ms = 0;            // embedding + final norm + lm_head per decoded token
  std::vector<double> decode_layer_ms;  // per layer, mean over decoded tokens
  double weight_bytes_per_token = 0;    // attention + router + top-k experts per layer + lm_head
  double memcpy_gbps = 0;               // read + write bytes per second of a large memcpy, GB/s (1e9)
  double bandwidth_ratio = 0;           // weight_bytes_per_token * decode tok/s / memcpy bandwidth
  double weight_gbps = 0;               // weight_bytes_per_token * decode tok/s, GB/s
  double peak_rss_bytes = 0;
  double load_ms = 0;
  std::string description;
  std::vector<std::string> cpu_features;
  int threads = 0;
};

BenchResult run_bench(const BenchOptions& opts);

// Best-of-`repeats` multi-threaded memcpy over `bytes`: returns (read + write) GB/s.
double measure_memcpy_gbps(size_t bytes, int threads, int repeats = 5);
// Peak resident set (VmHWM), bytes.
size_t peak_rss_bytes();

std::string bench_result_json(const BenchResult& r);

}  // namespace mixq
