// libFuzzer target: config.json through load_model_config, then the checkpoint consistency check against the
// fixture's tensor names. A config that loads must satisfy the invariants the engine relies on; any other input
// must throw mixq::Error.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "error.h"
#include "model.h"
#include "model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/mixq-fuzz-config-XXXXXX";
    return std::string(mkdtemp(tmpl));
  }();
  {
    std::ofstream f(dir + "/config.json", std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  }
  try {
    const mixq::ModelConfig c = mixq::load_model_config(dir);
    if (c.hidden_size <= 0 || c.num_hidden_layers <= 0 || c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 ||
        c.num_attention_heads % c.num_key_value_heads != 0 || c.head_dim <= 0 || c.head_dim % 2 != 0 ||
        c.num_experts_per_tok > c.num_local_experts || c.vocab_size <= 0 || c.bos_token_id < 0 ||
        c.bos_token_id >= c.vocab_size || c.eos_token_id < 0 || c.eos_token_id >= c.vocab_size ||
        !(c.rope_theta >= 1) || !std::isfinite(c.rope_theta) || !(c.rms_norm_eps > 0) || !(c.rms_norm_eps <= 0.1)) {
      __builtin_trap();
    }
    if (c.quant.enabled) mixq::validate_awq_quant_config(c.quant, "fuzz");
    static const std::vector<std::string> names = {
        "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.3.self_attn.q_proj.weight",
        "model.layers.1.block_sparse_moe.experts.7.w2.weight", "model.layers.99999999999.x", "model.layers..x",
        "model.layers.2.block_sparse_moe.experts.", "lm_head.weight"};
    mixq::check_checkpoint_matches_config(c, names, dir + "/config.json", "fuzz");
  } catch (const mixq::Error&) {
  }
  return 0;
}
