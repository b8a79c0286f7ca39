// Rounding with error feedback (the GPTQ/OBQ update) for one AWQ Linear, after AWQ scaling and clipping.
//
// Round-to-nearest picks each code on its own. Here the per-(group, column) scale and zero are fixed first,
// exactly as quantize_linear sets them from w_t (so the checkpoint format and the clip search's ranges are
// unchanged); then the input rows i = 0..in−1 of w_t [in, out] are rounded in order, and each row's rounding
// error is pushed onto the rows not yet rounded so that the layer's output error on the calibration inputs,
//     ‖X (Ŵ − W)‖² / n = tr((Ŵ − W)ᵀ H (Ŵ − W)),   H = XᵀX / n  [in, in],
// is minimised greedily (Frantar et al., "GPTQ", 2022; the update is Optimal Brain Quantization's):
//     e = (w_i − q_i) / U_ii,   w_j −= U_ij · e   for j > i,
// with U the upper Cholesky factor of (H + λI)⁻¹, λ = damp · mean(diag H). Rows are processed in blocks of 128
// with the update to later blocks done as one GEMM. act_order: rows are taken in order of decreasing H_ii
// (the loudest input channels first, while the most rows are left to absorb their error); the scales and
// zeros stay those of the natural groups (static groups), so the checkpoint format does not change.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/awq_math.h"

namespace mixq {
class ThreadPool;
}

namespace mixq::quant {

// H = Xᵀ X / n for x [n, in] with every channel first divided by div[i] (div may be null). Returns [in, in].
std::vector<float> gram_matrix(const float* x, int64_t n, int64_t in, const float* div, ThreadPool& pool);

// U [in, in] (upper triangle used): the upper Cholesky factor of (H + λI)⁻¹, in f32 with blocked, GEMM-shaped
// factorisation and inversion (O(in³) through sgemm: seconds at in = 14336). Channels with H_ii == 0 (never
// active) get H_ii = 1. Raises the damping (×10, up to 3 times) if H + λI is not numerically positive
// definite; throws mixq::Error after that.
std::vector<float> inverse_hessian_factor(const std::vector<float>& gram, int64_t in, double damp, ThreadPool& pool);

// The part of the work that depends on H only (shared by Linears that read the same input, e.g. q/k/v, w1/w3):
// the processing order and U for that order.
struct GptqFactor {
  int64_t in = 0;
  std::vector<int64_t> perm;  // position a rounds source row perm[a]
  std::vector<float> u;       // [in, in] upper factor of the permuted (H + λI)⁻¹ (f32, like GPTQ's)
};
GptqFactor gptq_factor(const std::vector<float>& gram, int64_t in, ThreadPool& pool, double damp = 0.01,
                       bool act_order = true);

// Codes for w_t [in, out] with error feedback under H (gram, [in, in]). spec.group divides in; same scale and
// zero as quantize_linear(w_t) would store.
QuantizedLinear gptq_quantize_linear(const float* w_t, int64_t in, int64_t out, const std::vector<float>& gram,
                                     const QuantSpec& spec, ThreadPool& pool, double damp = 0.01,
                                     bool act_order = true);

QuantizedLinear gptq_quantize_linear(const float* w_t, int64_t in, int64_t out, const GptqFactor& factor,
                                     const QuantSpec& spec, ThreadPool& pool);

// The row order act_order uses: indices of diag(gram) sorted by decreasing value (stable).
std::vector<int64_t> act_order_permutation(const std::vector<float>& gram, int64_t in);

}  // namespace mixq::quant
