// The model's weights, walkable per layer (the AWQ quantizer and tests use this), and the
// builder shared by Model::load (mapped checkpoint) and the synthetic benchmark (in-memory weights).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"
#include "linear.h"
#include "model_config.h"
#include "tensor.h"

namespace mixq {

class WeightStore;

struct ExpertWeights {
  std::unique_ptr<Linear> w1;  // gate: [inter, hidden]
  std::unique_ptr<Linear> w2;  // down: [hidden, inter]
  std::unique_ptr<Linear> w3;  // up:   [inter, hidden]
};

struct LayerWeights {
  std::vector<float> attn_norm;       // input_layernorm [hidden], widened to f32 (a vector, not a matrix)
  std::unique_ptr<Linear> q, k, v, o; // q: [heads*hd, hidden], k/v: [kv_heads*hd, hidden], o: [hidden, heads*hd]
  std::vector<float> post_attn_norm;  // post_attention_layernorm [hidden]
  std::unique_ptr<Linear> gate;       // router: [experts, hidden]
  std::vector<ExpertWeights> experts; // [num_local_experts]
};

struct ModelWeights {
  TensorView embed;                   // model.embed_tokens.weight [vocab, hidden], read in place
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;      // model.norm.weight [hidden]
  std::unique_ptr<Linear> lm_head;    // [vocab, hidden]; the embedding tensor when tie_word_embeddings
  std::shared_ptr<void> storage;      // keeps the mapping / synthetic buffers alive

  // dst[hidden] = embedding row of `token` widened to f32. Throws on an out-of-range id.
  void embed_row(int32_t token, float* dst) const;
  // Bytes one decoded token streams: attention + router + top_k experts per layer + lm_head.
  size_t decode_bytes_per_token(int top_k) const;
  size_t total_bytes() const;
};

// Looks a tensor up by checkpoint name; nullptr when absent.
using TensorLookup = std::function<const TensorView*(const std::string& name)>;

// Checks every tensor the config implies (name, shape; errors name the tensor, both shapes and the
// file) and builds the Linear objects. `source` names the weights in errors ("DIR (model.safetensors...)").
ModelWeights build_model_weights(const ModelConfig& cfg, const TensorLookup& lookup, const std::string& source);

// A Model over weights built by the caller (synthetic benchmark); `storage` keeps them alive.
std::shared_ptr<Model> make_model(const ModelConfig& cfg, ModelWeights weights, const EngineOptions& opts,
                                  const std::string& model_dir);

struct Model::Impl {
  ModelConfig config;
  EngineOptions options;
  std::unique_ptr<ThreadPool> pool;
  ModelWeights weights;
};

}  // namespace mixq
