// The AWQ / RTN quantizer: a 16-bit Mixtral or Qwen3-MoE folder in, an AutoAWQ "GEMM" int4 folder out. For
// Qwen3-MoE the groups below are the same with the family's names (mlp.gate, mlp.experts.E.{gate,up,down}_proj:
// w1 = gate_proj, w3 = up_proj, w2 = down_proj); its per-head q/k norms act after q/k and stay as they are;
// the router renormalises only when norm_topk_prob. Dense-MLP layers (mlp_only_layers) are not quantized yet
// (refused naming the field).
//
// Layer by layer (peak memory ≈ one layer's weights in f32 + the calibration activations):
//   1. load the layer's 16-bit weights from the mapped source, transposed to w_t [in, out] f32;
//   2. run the calibration activations through it in f32: the block outputs every loss compares against;
//   3. AWQ only — scale search per group of modules, α = i/20, i = 0..19, duo scaling normalised by
//      sqrt(max·min), loss = MSE of the group's block output with Q(W·s)/s:
//        (1) input_layernorm → q,k,v              loss: self-attention output (o_proj included)
//        (2) v → o                                loss: o_proj output. With GQA (AutoAWQ skips the group there)
//            the o_proj input channels of the heads that share a kv head share one scale, the scale of the v
//            channel they all read, so 1/s folds exactly into v's output channels;
//        (3) post_attention_layernorm → w1,w3 of ALL experts, one shared scale   loss: MoE block output
//        (4) per expert, w3 → w2 on that expert's routed tokens                   loss: w2 output
//      1/s is folded into the previous op (norm weights, v rows, w3 rows); the router, which reads the same
//      normed input as w1/w3, gets the scale (3) on its input channels; norms keep their source dtype, and the
//      weights are scaled by the exactly representable ratio norm/rounded(norm/s), so the fold is exact;
//   4. AWQ only — clip search on ≤ 512 tokens for every quantized Linear except q/k (awq_math.h);
//   5. int4 per group (zero point or symmetric): scales and zeros from the (clipped) weights; the codes by
//      round-to-nearest, or (AWQ, Rounding::Gptq, the default) with error feedback on the Linear's
//      calibration inputs (gptq.h) — same format, lower output error; then pack and write the layer's shard;
//   6. the next layer's calibration input: the output of this layer as quantized (propagate_quantized, the
//      default: later layers calibrate on what they will really see) or of the float layer (AutoAWQ's choice).
// Rounding::Nearest + propagate_quantized = false is AutoAWQ's algorithm for Mixtral (plus group (2) under GQA).
// Measured on the fixture (docs/BENCHMARKS.md, AWQ quality): ppl 9.597 that way (9.607 without group (2)); 9.53 with
// the defaults. On the Qwen3-MoE fixture (48 experts, top-8) the default pipeline at the CLI's default calibration,
// 128 samples × 512 tokens, closes 54–56% of RTN's gap (3 seeds); 32 samples close only 31–42%: every search sees
// few tokens and its α swings with the sample (docs/BENCHMARKS.md, "Qwen3-MoE fixture").
// An expert that receives no calibration tokens cannot be calibrated on its own inputs: it falls back to
// using ALL the layer's calibration tokens as its inputs for its w2 scale, its clip search and its rounding
// (a warning says which expert, and one per layer how many experts did). Output goes to OUT.tmp-XXXXXX, renamed to OUT only when complete; a cancelled
// or failed run removes it.
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
  std::string phase;      // "load", "forward", "search-attn", "search-moe", "search-experts", "clip", "pack", "propagate", "write", "done"
  double fraction = 0;    // of the whole run, 0..1
  double elapsed_s = 0;
  double eta_s = -1;      // -1 until one layer has completed
};

enum class Rounding { Nearest, Gptq };

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
  Rounding rounding = Rounding::Gptq;  // AWQ only (RTN is round-to-nearest by definition)
  bool propagate_quantized = true;     // AWQ: calibrate layer l+1 on layer l's quantized output
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
  int experts_without_tokens = 0;  // (layer, expert) pairs that got no calibration tokens and used the fallback
  std::vector<float> best_alpha;  // per (layer, group): layer·(3 + experts) + {0: attn, 1: moe, 2+e: expert e, 2+E: v→o}
};

QuantizeResult quantize_model(const QuantizeOptions& opts);

// ---- one layer, in memory (the driver and the Mixtral-shape benchmark use this) ---------------------------

struct LayerF32 {
  std::vector<float> attn_norm, post_norm;  // [d]
  std::vector<float> q_norm, k_norm;        // [head_dim] Qwen3 per-head norms (empty: none); never scaled
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
  Rounding rounding = Rounding::Gptq;  // only when awq
  bool propagate_quantized = true;     // only when awq: h ← the quantized layer's output
  double gptq_damp = 0.1;              // λ = damp · mean(diag H) (0.1: lower ppl than 0.01 on the fixture, 3 seeds)
  // Rounds a folded norm weight to the dtype it is stored in (identity for f32 storage).
  std::function<float(float)> round_norm = [](float x) { return x; };
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(const std::string& phase, double layer_fraction)> on_phase;
};

struct LayerQuantized {
  std::vector<float> attn_norm, post_norm;  // folded (already rounded by round_norm)
  std::vector<float> gate_t;                // [d, E] router, input channels scaled like w1/w3 (stays 16-bit)
  // "self_attn.q_proj", ..., "block_sparse_moe.experts.3.w2" (Qwen3-MoE: "mlp.experts.3.down_proj") → codes
  std::vector<std::pair<std::string, QuantizedLinear>> linears;
  std::vector<std::string> warnings;
  int experts_without_tokens = 0;  // experts that got no calibration tokens (the fallback above)
  std::vector<float> best_alpha;  // attn, moe, expert 0..E-1, v→o (−1: not searched)
  // forward, search-attn (incl. v→o), search-moe, search-experts (incl. w2 clip and rounding), clip, pack
  // (rounding of the rest), propagate
  std::vector<double> phase_seconds;
};

// h: [samples·seq_len, d] the layer input; replaced by the layer's output (quantized or float, see
// propagate_quantized) (when awq; RTN does not
// need activations and passes h = nullptr). `w` is modified (scaled, clipped).
void quantize_layer(const ModelConfig& cfg, LayerF32& w, float* h, int64_t samples, int64_t seq_len,
                    const LayerQuantOptions& opts, LayerQuantized* out, ThreadPool& pool);

}  // namespace mixq::quant
