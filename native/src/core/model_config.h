// config.json of a Hugging Face Mixtral checkpoint.
#pragma once
#include <cstdint>
#include <string>

namespace mixq {

struct QuantConfig {
  bool enabled = false;          // false: 16/32-bit weights
  std::string quant_method;      // "awq"
  int bits = 4;
  int group_size = 128;
  bool zero_point = true;
  std::string version;           // "gemm"
};

struct ModelConfig {
  std::string model_type;        // must be "mixtral"
  int hidden_size = 0;           // d
  int intermediate_size = 0;     // expert FFN width
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;              // config's head_dim, else hidden_size / num_attention_heads
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-5;
  int num_local_experts = 0;
  int num_experts_per_tok = 0;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  int sliding_window = 0;        // 0 = none (config null)
  int max_position_embeddings = 0;
  int bos_token_id = 1;
  int eos_token_id = 2;
  QuantConfig quant;
};

// Throws mixq::Error naming `source` unless quant is AWQ, version "gemm" (any case), 4 bits, a valid group size.
void validate_awq_quant_config(const QuantConfig& quant, const std::string& source);

// Parses and validates DIR/config.json. Throws mixq::Error naming the file and the field.
ModelConfig load_model_config(const std::string& model_dir);

}  // namespace mixq
