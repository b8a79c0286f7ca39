// AWQ quantization_config validation (format facts; see FIELD-NOTES).
#include <algorithm>
#include <cctype>
#include <string>

#include "error.h"
#include "model_config.h"

namespace mixq {

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  return s;
}
}  // namespace

void validate_awq_quant_config(const QuantConfig& quant, const std::string& source) {
  if (lower(quant.quant_method) != "awq") {
    throw Error(source + ": quantization_config.quant_method \"" + quant.quant_method +
                "\" is not supported (only \"awq\")");
  }
  if (lower(quant.version) != "gemm") {
    throw Error(source + ": quantization_config.version \"" + quant.version +
                "\" is not supported (only the AutoAWQ \"gemm\" layout)");
  }
  if (quant.bits != 4) {
    throw Error(source + ": quantization_config.bits " + std::to_string(quant.bits) + " is not supported (only 4)");
  }
  if (quant.group_size == 0 || quant.group_size < -1) {
    throw Error(source + ": quantization_config.group_size " + std::to_string(quant.group_size) + " is invalid");
  }
}

}  // namespace mixq
