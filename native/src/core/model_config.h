// config.json of a Hugging Face mixture-of-experts checkpoint: Mixtral (model_type "mixtral") or Qwen3-MoE
// ("qwen3_moe").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mixq {

struct QuantConfig {
  bool enabled = false;          // false: 16/32-bit weights
  std::string quant_method;      // "awq"
  int bits = 4;
  int group_size = 128;
  bool zero_point = true;
  std::string version;           // "gemm"
};

// The checkpoint names that differ between the families, below "model.layers.L.".
struct WeightNames {
  std::string moe;         // "block_sparse_moe" | "mlp": the MoE block (router "<moe>.gate", "<moe>.experts.E.")
  std::string w1, w2, w3;  // expert gate / down / up: "w1" "w2" "w3" | "gate_proj" "down_proj" "up_proj"
};

struct ModelConfig {
  std::string model_type;        // "mixtral" | "qwen3_moe"
  int hidden_size = 0;           // d
  int intermediate_size = 0;     // expert FFN width (Mixtral intermediate_size, Qwen3-MoE moe_intermediate_size)
  int dense_intermediate_size = 0;  // Qwen3-MoE intermediate_size: width of the dense-MLP layers (0: none)
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;              // config's head_dim, else hidden_size / num_attention_heads
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-5;
  int num_local_experts = 0;     // Mixtral num_local_experts, Qwen3-MoE num_experts
  int num_experts_per_tok = 0;
  bool norm_topk_prob = true;    // top-k weights renormalised to sum 1 (always for Mixtral)
  bool qk_norm = false;          // per-head RMSNorm of q and k before RoPE (Qwen3: self_attn.{q,k}_norm [head_dim])
  int decoder_sparse_step = 1;   // Qwen3-MoE: layer l is MoE when (l+1) % step == 0 and l is not in mlp_only_layers
  std::vector<int> mlp_only_layers;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  int sliding_window = 0;        // 0 = none (config null)
  int max_position_embeddings = 0;
  int bos_token_id = 1;
  int eos_token_id = 2;
  QuantConfig quant;

  bool moe_layer(int layer) const;  // false: a dense SwiGLU MLP of dense_intermediate_size (mlp.{gate,up,down}_proj)
  WeightNames names() const;
};

// Throws mixq::Error naming `source` unless quant is AWQ, version "gemm" (any case), 4 bits, a valid group size.
void validate_awq_quant_config(const QuantConfig& quant, const std::string& source);

// Parses and validates DIR/config.json. Throws mixq::Error naming the file and the field.
ModelConfig load_model_config(const std::string& model_dir);

}  // namespace mixq
