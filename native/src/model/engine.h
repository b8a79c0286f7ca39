// The engine's public C++ API: everything the N-API layer, the CLI tests and the benchmarks use.
// No N-API or CUDA header is included from here.
//
//   Model   — config + weights (immutable after load, shareable between contexts).
//   Context — one sequence: its KV cache and the token ids that cache holds.
//   generate() — prompt → tokens with KV reuse of the longest common prefix, sampling, streaming, cancel.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model_config.h"
#include "core/profiler.h"
#include "core/tensor.h"
#include "placement.h"

namespace mixq {

struct ModelWeights;  // defined in model.h

struct EngineOptions {
  std::string device = "cpu";        // "cpu" | "cpu:N" | "cuda" | "cuda:N" | "auto" (a GPU when one can run the model)
  std::vector<std::string> devices;  // several devices ("cpu:0", "cpu:1", "cuda:0", ...); overrides `device`
  std::vector<int> gpus;             // GPU ordinals: the same as devices cuda:N (when `devices` is empty)
  std::string placement = "layer";   // "layer" (contiguous layers per device) | "expert" (experts spread)
  std::vector<double> split;         // proportions per device; empty: from the devices' free memory
  std::vector<size_t> device_memory; // bytes usable per device (caps; empty: each device's free memory)
  int threads = 0;                   // CPU worker threads; 0 = all hardware threads
  int context_length = 0;            // KV cache capacity in tokens; 0 = min(max_position_embeddings, 4096)
};

// What one device of a loaded model holds.
struct DeviceUsage {
  std::string device;        // "cpu:1"
  std::string name;          // the backend's description
  size_t planned_bytes = 0;  // the planner's figure: weights + KV cache
  size_t arena_bytes = 0;    // what the device's arena holds now (weights; the KV caches of live contexts)
  size_t peak_arena_bytes = 0;
};

// One device's op timings (core/profiler.h) with what identifies the device.
struct DeviceProfile {
  std::string device;   // "cpu:1"
  std::string kind;     // "cpu" | "cuda"
  std::string backend;  // the backend's description
  ProfileSnapshot profile;
};

// What profiling recorded since the last reset: per device (placement order), and the forward passes — "prefill"
// (several tokens) and "decode" (one) — whose events bound each step's ops on the shared clock (the timeline).
struct ModelProfile {
  bool enabled = false;
  std::vector<DeviceProfile> devices;
  ProfileSnapshot steps;
};

// {"devices":[{"name","kind","backend","total_ms","kernels":[{"name","calls","total_ms","mean_us"[,"bytes","gbps"]}]}],
//  "ceilings":{"copy_gbps":{device: GB/s}}} — the shape `mixq profile --json` prints (issue 9).
std::string profile_json(const ModelProfile& p, const std::map<std::string, double>& copy_gbps);

class Model {
 public:
  // Loads DIR (config.json + model.safetensors or sharded with model.safetensors.index.json).
  // Throws mixq::Error naming the file / tensor / field on any inconsistency.
  static std::shared_ptr<Model> load(const std::string& model_dir, const EngineOptions& opts);
  ~Model();
  const ModelConfig& config() const;
  const EngineOptions& options() const;
  const ModelWeights& weights() const;
  const Plan& placement() const;
  std::vector<DeviceUsage> device_usage() const;
  int threads() const;               // CPU worker threads
  size_t weight_bytes() const;       // resident weight bytes (mapped)
  std::string description() const;   // e.g. "mixtral 4 layers, 8 experts top-2, bf16, cpu:0 (AVX-512, 2 threads)"
  // Op timing on every device (and the step log), switchable at any time from any thread; off at load. While off an
  // op costs one flag test; while on, a clock read and a short lock (CPU) per op.
  void set_profiling(bool on);
  bool profiling() const;
  ModelProfile profile() const;  // a copy; safe while another thread evaluates
  void reset_profile();
  std::string model_dir;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl;
  friend class Context;
  friend std::shared_ptr<Model> make_model_from(std::unique_ptr<Impl> impl, const std::string& model_dir);
  friend std::vector<float> host_floats(const Model& m, const Tensor& t);
};

// What eval() should capture besides logits (tests and perplexity use these).
struct EvalCapture {
  bool all_logits = false;          // logits of every evaluated position, else only the last
  bool hidden = false;              // hidden[K]: [n, hidden] K=0 embeddings, K=1..L-1 residual after layer K-1, K=L final-normed
  bool router_logits = false;       // router_logits[layer]: [n, experts] before softmax
  std::vector<float> logits;        // [n or 1, vocab]
  std::vector<std::vector<float>> hidden_states;
  std::vector<std::vector<float>> router;
  std::vector<std::vector<int32_t>> topk_experts;  // [layer]: [n, top_k] chosen experts, in order
  bool next_token_only = false;     // greedy decoding: only next_token, the argmax of the last logits row, chosen
                                    // on the head's device (logits stay empty: nothing vocab-sized is copied)
  int32_t next_token = -1;
  bool timing = false;              // fill layer_ms / head_ms (benchmarks)
  std::vector<double> layer_ms;     // [layer]: wall ms spent in each decoder layer during this eval
  double head_ms = 0;               // embedding + final norm + lm_head
};

class Context {
 public:
  Context(std::shared_ptr<Model> model, int capacity = 0);
  ~Context();
  // Evaluates `tokens` at positions [n_past, n_past+len) and appends them to the cache.
  // Throws mixq::Error if the cache would overflow.
  void eval(const std::vector<int32_t>& tokens, EvalCapture& out);
  // Drops cached positions >= n (keeps the first n tokens).
  void truncate(int n);
  int n_past() const;
  int capacity() const;
  // How one-token steps run: "graph" (recorded once, replayed), "ops" (one by one: no recording backend, a
  // multi-device plan, or not yet settled) or "ops (recording failed: …)".
  std::string step_mode() const;
  const std::vector<int32_t>& cached_tokens() const;
  Model& model() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl;
};

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;
  int top_k = 0;      // 0 = off
  float top_p = 1.0f; // 1 = off
  uint64_t seed = 0;
};

struct GenerateOptions {
  int max_tokens = 16;
  SamplingOptions sampling;
  std::vector<int32_t> stop_ids;  // stop on any of these (EOS is always a stop unless ignore_eos)
  bool ignore_eos = false;
  int prefill_chunk = 256;        // prompt tokens per forward pass; cancel is polled between chunks
};

enum class StopReason { Eos, StopId, MaxTokens, Cancelled, ContextFull, Callback };
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stop id included when it was produced)
  StopReason stop_reason = StopReason::MaxTokens;
  int prompt_tokens = 0;
  int reused_tokens = 0;     // prompt tokens whose KV entries were reused
  int evaluated_tokens = 0;  // tokens run through the model in this call (prompt remainder + decode steps)
  double prefill_ms = 0;
  double decode_ms = 0;
};

// Called with each new token as soon as it is sampled; return false to stop.
using TokenCallback = std::function<bool(int32_t token)>;

// Reuses the longest common prefix of ctx.cached_tokens() and prompt (at least the last prompt token
// is always re-evaluated to get fresh logits), then decodes. `cancel` is polled before every token.
GenerateResult generate(Context& ctx, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                        const TokenCallback& on_token, const std::atomic<bool>* cancel);

}  // namespace mixq
