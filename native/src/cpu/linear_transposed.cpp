#include "linear_transposed.h"

#include "core/error.h"
#include "sgemm.h"

namespace mixq {

namespace {

class TransposedF32Linear final : public CpuLinear {
 public:
  explicit TransposedF32Linear(const TensorView& w_t) : w_(w_t) {
    if (w_t.shape.size() != 2 || w_t.dtype != DType::F32) {
      throw Error("tensor " + w_t.name + ": a transposed linear weight must be 2-D F32 [in, out], got " +
                  std::string(dtype_name(w_t.dtype)) + " " + w_t.shape_str());
    }
    in_features = w_t.shape[0];
    out_features = w_t.shape[1];
  }
  // y[n, out] = x[n, in] · w_t
  void forward(const float* x, int64_t n, float* y, ThreadPool& pool) const override {
    sgemm(x, in_features, data(), out_features, y, out_features, n, in_features, out_features, false, pool);
  }
  void weight_row(int64_t o, float* dst) const override {
    for (int64_t i = 0; i < in_features; ++i) dst[i] = data()[i * out_features + o];
  }
  size_t weight_bytes() const override { return w_.nbytes; }
  std::string kind() const override { return "f32-transposed"; }

 private:
  const float* data() const { return static_cast<const float*>(w_.data); }
  TensorView w_;
};

}  // namespace

std::unique_ptr<CpuLinear> make_transposed_f32_linear(const TensorView& w_t) {
  return std::make_unique<TransposedF32Linear>(w_t);
}

}  // namespace mixq
