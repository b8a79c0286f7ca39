// The AWQ int4 Linear: packed weights read in place from the checkpoint mapping; only the scales are
// re-laid (fp16 → f32 in kernel order, 1/16 of the packed size) so the kernels load them contiguously.
#include "linear_awq.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "awq/w4a16_cpu.h"
#include "error.h"

namespace mixq {
namespace {

// "model.layers.0.self_attn.q_proj.qweight" → "model.layers.0.self_attn.q_proj"
std::string prefix_of(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

std::string where(const TensorView& t) { return t.file.empty() ? t.name : t.file + ": " + t.name; }

class AwqLinear final : public CpuLinear {
 public:
  AwqLinear(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales, int64_t group)
      : qweight_(qweight), qzeros_(qzeros), scales_(scales) {
    in_features = qweight.shape[0];
    out_features = qweight.shape[1] * 8;
    name = prefix_of(qweight.name);
    scales_tiled_ = awq::make_tiled_scales(static_cast<const uint16_t*>(scales.data), scales.dtype == DType::BF16,
                                           in_features / group, out_features);
    w_.in = in_features;
    w_.out = out_features;
    w_.group = group;
    w_.qweight = static_cast<const int32_t*>(qweight.data);
    w_.qzeros = static_cast<const int32_t*>(qzeros.data);
    w_.scales_tiled = scales_tiled_.data();
    kind_ = "awq-int4-g" + std::to_string(group);
  }

  void forward(const float* x, int64_t n, float* y, ThreadPool& pool) const override {
    awq::w4a16_forward(w_, x, n, y, pool);
  }
  void weight_row(int64_t o, float* dst) const override { awq::w4a16_weight_row(w_, o, dst); }
  size_t weight_bytes() const override { return qweight_.nbytes + qzeros_.nbytes + scales_.nbytes; }
  std::string kind() const override { return kind_; }

 private:
  TensorView qweight_, qzeros_, scales_;
  std::vector<float> scales_tiled_;
  awq::W4A16Weights w_;
  std::string kind_;
};

}  // namespace

std::unique_ptr<CpuLinear> make_awq_linear(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
                                        const QuantConfig& quant) {
  const std::string prefix = prefix_of(qweight.name);
  validate_awq_quant_config(quant, qweight.file.empty() ? prefix : qweight.file);
  if (!qweight.data || qweight.shape.size() != 2 || qweight.dtype != DType::I32) {
    throw Error(where(qweight) + ": qweight must be a 2-D int32 tensor [in, out/8], got " +
                std::string(dtype_name(qweight.dtype)) + " " + qweight.shape_str());
  }
  if (!qzeros.data || qzeros.name.empty()) throw Error("missing qzeros for " + prefix + " (" + qweight.file + ")");
  if (!scales.data || scales.name.empty()) throw Error("missing scales for " + prefix + " (" + qweight.file + ")");
  const int64_t in = qweight.shape[0], out = qweight.shape[1] * 8;
  const int64_t group = quant.group_size == -1 ? in : quant.group_size;
  if (in <= 0 || out <= 0) throw Error(where(qweight) + ": empty qweight " + qweight.shape_str());
  if (in % group != 0) {
    throw Error(where(qweight) + ": group size " + std::to_string(group) + " does not divide in_features " +
                std::to_string(in) + " (qweight " + qweight.shape_str() + ")");
  }
  const int64_t groups = in / group;
  if (scales.dtype != DType::F16 && scales.dtype != DType::BF16) {
    throw Error(where(scales) + ": scales must be fp16 or bf16, got " + dtype_name(scales.dtype));
  }
  if (scales.shape != std::vector<int64_t>{groups, out}) {
    throw Error(where(scales) + ": scales shape " + scales.shape_str() + " is inconsistent with qweight " +
                qweight.shape_str() + " and group size " + std::to_string(group) + " (expected [" +
                std::to_string(groups) + ", " + std::to_string(out) + "])");
  }
  if (qzeros.dtype != DType::I32 || qzeros.shape != std::vector<int64_t>{groups, out / 8}) {
    throw Error(where(qzeros) + ": qzeros " + dtype_name(qzeros.dtype) + " " + qzeros.shape_str() +
                " is inconsistent with qweight " + qweight.shape_str() + " and group size " + std::to_string(group) +
                " (expected I32 [" + std::to_string(groups) + ", " + std::to_string(out / 8) + "])");
  }
  return std::make_unique<AwqLinear>(qweight, qzeros, scales, group);
}

}  // namespace mixq
