// The AWQ / RTN quantizer: a 16-bit Mixtral folder in, an AutoAWQ "GEMM" int4 folder out.
//
// Layer by layer (peak memory ≈ one layer's weights in f32 + the calibration activations):
//   1. load the layer's 16-bit weights from the mapped source, transposed to w_t [in, out] f32;
//   2. run the calibration activations through it (the float layer: its output feeds the next layer, as in
//      AutoAWQ, so quantization error does not compound into the statistics);
//   3. AWQ only — scale search per group of modules, α = i/20, i = 0..19, duo scaling normalised by
//      sqrt(max·min), loss = MSE of the group's block output with Q(W·s)/s:
//        (1) input_layernorm → q,k,v              loss: self-attention output (o_proj included)
//        (3) post_attention_layernorm → w1,w3 of ALL experts, one shared scale   loss: MoE block output
//        (4) per expert, w3 → w2 on that expert's routed tokens                   loss: w2 output
//      ((2) v → o is skipped: GQA shapes differ.) 1/s is folded into the previous op (norm weights, w3 rows);
//      the router, which reads the same normed input as w1/w3, gets the scale (3) on its input channels;
//      norms keep their source dtype, and the weights are scaled by the exactly representable ratio
//      norm/rounded(norm/s), so the fold is exact;
//   4. AWQ only — clip search on ≤ 512 tokens for every quantized Linear except q/k (awq_math.h);
//   5. RTN int4 per group (zero point or symmetric), pack, and write the layer's shard.
// An expert that receives no calibration tokens cannot be calibrated on its own inputs: it falls back to
// using ALL the layer's calibration tokens as its inputs for its w2 scale and its clip search (a warning
// says which expert). Output goes to OUT.tmp-XXXXXX, renamed to OUT only when complete; a cancelled or
// failed run removes it.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model_config.h"
#include "quant/awq_math.h"

namespace mixq {
class ThreadPool;
}

namespace mixq::quant {

struct QuantizeProgress {
  int layer = 0;          // 0-based layer being processed
  int layers = 0;
  std::string phase;      // "load", "forward", "search-attn", "search-moe", "search-experts", "clip", "pack", "write", "done"
  double fraction = 0;    // of the whole run, 0..1
  double elapsed_s = 0;
  double eta_s = -1;      // -1 until one layer has completed
};

struct QuantizeOptions {
  std::string source_dir;  // 16-bit Mixtral folder
  std::string output_dir;  // must not exist (or be an empty folder)
  std::string method = "awq";  // "awq" | "rtn"
  int group_size = 128;    // 32, 64 or 128
  bool zero_point = true;  // false: symmetric
  std::vector<int32_t> calib_ids;  // [samples, seq_len] token ids (AWQ; ignored by RTN)
  int samples = 0;
  int seq_len = 0;
  int clip_tokens = 512;   // clip search token budget per Linear
  int threads = 0;         // 0 = all hardware threads
  std::function<void(const QuantizeProgress&)> on_progress;
  const std::atomic<bool>* cancel = nullptr;  // polled between phases and α steps; throws mixq::Cancelled
  // Tests: every quantized Linear (checkpoint prefix, codes) before packing.
  std::function<void(const std::string& prefix, const QuantizedLinear&)> on_linear;
};

struct QuantizeResult {
  std::string output_dir;
  double seconds = 0;
  size_t peak_rss_bytes = 0;
  int layers = 0;
  int64_t calib_tokens = 0;
  size_t output_bytes = 0;
  std::vector<double> layer_seconds;
  std::vector<std::string> warnings;
  std::vector<float> best_alpha;  // per (layer, group): layer·(2 + experts) + {0: attn, 1: moe, 2+e: expert e}
};

QuantizeResult quantize_model(const QuantizeOptions& opts);

// ---- one layer, in memory (the driver and the Mixtral-shape benchmark use this) ---------------------------

struct LayerF32 {
  std::vector<float> attn_norm, post_norm;  // [d]
  std::vector<float> q_t, k_t, v_t, o_t;    // [d, H·hd], [d, KV·hd], [d, KV·hd], [H·hd, d]
  std::vector<float> gate_t;                // [d, E] (not quantized)
  struct Expert {
    std::vector<float> w1_t, w3_t;  // [d, inter]
    std::vector<float> w2_t;        // [inter, d]
  };
  std::vector<Expert> experts;
};

struct LayerQuantOptions {
  bool awq = true;
  QuantSpec spec;
  int clip_tokens = 512;
  // Rounds a folded norm weight to the dtype it is stored in (identity for f32 storage).
  std::function<float(float)> round_norm = [](float x) { return x; };
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(const std::string& phase, double layer_fraction)> on_phase;
};

struct LayerQuantized {
  std::vector<float> attn_norm, post_norm;  // folded (already rounded by round_norm)
  std::vector<float> gate_t;                // [d, E] router, input channels scaled like w1/w3 (stays 16-bit)
  // "self_attn.q_proj", ..., "block_sparse_moe.experts.3.w2" → codes
  std::vector<std::pair<std::string, QuantizedLinear>> linears;
  std::vector<std::string> warnings;
  std::vector<float> best_alpha;  // attn, moe, expert 0..E-1 (−1: not searched)
  std::vector<double> phase_seconds;  // forward, search-attn, search-moe, search-experts, clip, pack
};

// h: [samples·seq_len, d] the layer input; replaced by the float layer's output (when awq; RTN does not
// need activations and passes h = nullptr). `w` is modified (scaled, clipped).
void quantize_layer(const ModelConfig& cfg, LayerF32& w, float* h, int64_t samples, int64_t seq_len,
                    const LayerQuantOptions& opts, LayerQuantized* out, ThreadPool& pool);

}  // namespace mixq::quant
