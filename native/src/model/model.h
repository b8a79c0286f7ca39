// The model's weights as placed on their devices (walkable per layer: the quantizer's tests and the benchmarks
// use this), and the builder shared by Model::load (mapped checkpoint) and the synthetic benchmark (in-memory
// weights).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/model_config.h"
#include "core/tensor.h"
#include "engine.h"
#include "placement.h"

namespace mixq {

struct LayerWeights {
  Tensor attn_norm;                    // input_layernorm [hidden] f32, on the layer's device
  std::unique_ptr<Linear> q, k, v, o;  // q: [heads*hd, hidden], k/v: [kv_heads*hd, hidden], o: [hidden, heads*hd]
  Tensor q_norm, k_norm;               // Qwen3 self_attn.{q,k}_norm [head_dim] f32 (no buffer: the family has none)
  Tensor post_attn_norm;               // post_attention_layernorm [hidden] f32
  // An MoE layer: the router and experts. A dense-MLP layer (Qwen3-MoE mlp_only_layers / decoder_sparse_step):
  // gate null, experts empty, `mlp` its SwiGLU (w1 gate_proj, w2 down_proj, w3 up_proj).
  std::unique_ptr<Linear> gate;        // router: [experts, hidden]
  std::vector<ExpertWeights> experts;  // [num_local_experts], each on the device the plan gives it
  std::vector<ExpertSet> expert_sets;  // [device]: the experts that device holds (null elsewhere)
  ExpertWeights mlp;                   // dense layers only: [dense_inter, hidden] / [hidden, dense_inter]
  bool dense() const { return !gate; }
};

struct ModelWeights {
  TensorView embed_view;              // model.embed_tokens.weight [vocab, hidden] in the mapping (host)
  Tensor embed;                       // the same, resident on the embedding's device
  std::vector<LayerWeights> layers;
  Tensor final_norm;                  // model.norm.weight [hidden] f32
  std::unique_ptr<Linear> lm_head;    // [vocab, hidden]; the embedding tensor when tie_word_embeddings
  std::shared_ptr<const void> storage;  // keeps the mapping / synthetic buffers alive

  // dst[hidden] = embedding row of `token` widened to f32 (host). Throws on an out-of-range id.
  void embed_row(int32_t token, float* dst) const;
  // Bytes one decoded token streams: attention + router + top_k experts per layer + lm_head.
  size_t decode_bytes_per_token(int top_k) const;
  size_t total_bytes() const;
};

// Looks a tensor up by checkpoint name; nullptr when absent.
using TensorLookup = std::function<const TensorView*(const std::string& name)>;

// The model's parts in bytes (for the planner) from the checkpoint's tensors, with the KV cache of `capacity`.
ModelBytes model_bytes(const ModelConfig& cfg, const TensorLookup& lookup, int capacity);

// Throws mixq::Error naming config.json and the checkpoint when `names` (a checkpoint's tensor names) hold a layer
// index >= num_hidden_layers or an expert index >= num_local_experts: such tensors would be ignored silently.
void check_checkpoint_matches_config(const ModelConfig& cfg, const std::vector<std::string>& names,
                                     const std::string& config_path, const std::string& source);

// A Model over the tensors of `lookup` (a mapped checkpoint or synthetic buffers kept alive by `storage`): checks
// every tensor the config implies (name, shape; errors name the tensor, both shapes and the file), plans the
// placement from `opts` and prepares every weight on its device.
std::shared_ptr<Model> make_model(const ModelConfig& cfg, const TensorLookup& lookup,
                                  std::shared_ptr<const void> storage, const EngineOptions& opts,
                                  const std::string& model_dir, const std::string& source);

struct Model::Impl {
  ModelConfig config;
  EngineOptions options;
  std::vector<std::unique_ptr<Backend>> backends;  // [device index of the plan]
  Plan plan;
  ModelWeights weights;
  // The forward passes ("prefill" / "decode", Context::eval) on the profilers' clock, switched with the backends'.
  Profiler steps{1024};
};

// f32 copy of a vector tensor of this model (norm weights), wherever it lives.
std::vector<float> host_floats(const Model& m, const Tensor& t);

}  // namespace mixq
