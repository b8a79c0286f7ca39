// AWQ quantizer math on plain arrays. Every weight here is kept transposed, w_t [in, out] f32 (the layout of
// the AutoAWQ GEMM checkpoint), so groups run down the input dimension of each output column.
//
// Round-to-nearest int4 (AutoAWQ pseudo_quantize_tensor), per (group g, column o), scales rounded to fp16
// first so that what we store is exactly what we computed with:
//   zero point: s = fp16(max(max − min, 1e-5) / 15), z = clamp(−round(min / s), 0, 15),
//               q = clamp(round(w / s) + z, 0, 15)
//   symmetric:  s = fp16(max(max|w|, 1e-5) / 7),     z = 8, q = clamp(round(w / s), −8, 7) + 8
//   w ≈ (q − z) · s.  round = half to even (torch.round).
#pragma once
#include <cstdint>
#include <vector>

namespace mixq {
class ThreadPool;
}

namespace mixq::quant {

struct QuantSpec {
  int group = 128;         // input rows per scale/zero; divides in
  bool zero_point = true;  // false: symmetric (z = 8 stored so the GEMM format stays as it is)
};

// One Linear's codes in the checkpoint's layout (before packing).
struct QuantizedLinear {
  int64_t in = 0, out = 0, group = 0;
  std::vector<uint8_t> q;        // [in, out] 0..15
  std::vector<uint8_t> zeros;    // [in/group, out] 0..15
  std::vector<uint16_t> scales;  // [in/group, out] fp16 bits
  // w_t [in, out] = (q − z) · f32(s): the quantizer's own dequantized weights.
  void dequantize(float* w_t) const;
};

QuantizedLinear quantize_linear(const float* w_t, int64_t in, int64_t out, const QuantSpec& spec, ThreadPool& pool);
// w_t ← dequantize(quantize(w_t)) in place (what the scale search evaluates).
void fake_quantize(float* w_t, int64_t in, int64_t out, const QuantSpec& spec, ThreadPool& pool);

// Per input channel: mean over the output columns of |w| / (max |w| of its group + 1e-6), over all the
// given matrices together (AutoAWQ's w_mean; the matrices share `in`). Returns [in].
std::vector<float> weight_channel_mean(const std::vector<const float*>& w_ts, const std::vector<int64_t>& outs,
                                       int64_t in, int group);
// Per input channel mean |x| over n rows of x [n, in]. Returns [in].
std::vector<float> activation_channel_mean(const float* x, int64_t n, int64_t in);
// Duo scaling for α: s = max(x_mean^α / (w_mean^(1−α) + 1e-4), 1e-4), then s / sqrt(max(s)·min(s)).
std::vector<float> duo_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, float alpha);

// Clip search and apply (every quantized Linear except q/k): for each (group, column) pick
// c = max|w|·(1 − i/20), i = 0..9, minimising the group's output error on the tokens x [n, in]
//   err = mean_t (x_t,g · (Q(clamp(w_g, −c, c)) − w_g))² = dᵀ Gram_g d, Gram_g = X_gᵀ X_g / n,
// then clamp w_t to ±c. n == 0 leaves w_t unchanged. Returns the mean chosen shrink fraction i/20.
double clip_search_apply(float* w_t, int64_t in, int64_t out, const float* x, int64_t n, const QuantSpec& spec,
                         ThreadPool& pool);

}  // namespace mixq::quant
