#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "error.h"
#include "sgemm.h"
#include "tensor.h"
#include "thread_pool.h"

namespace mixq::quant {
namespace {

constexpr int64_t kGramChunk = 256;  // tokens per Gram update
constexpr int64_t kBlock = 128;      // rows rounded before one lazy GEMM update of the rest
constexpr int64_t kColChunk = 256;   // columns per thread task inside a block
constexpr int64_t kNb = 128;  // block size of the factorisation and of the inverse (GEMM-shaped updates)

// Σ a[k]·b[k] (f32 data, f64 sum), k < n: the short dot products inside a kNb block.
inline double dotf(const float* a, const float* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    s0 += double(a[k]) * b[k];
    s1 += double(a[k + 1]) * b[k + 1];
    s2 += double(a[k + 2]) * b[k + 2];
    s3 += double(a[k + 3]) * b[k + 3];
  }
  for (; k < n; ++k) s0 += double(a[k]) * b[k];
  return (s0 + s1) + (s2 + s3);
}

// In place, blocked right-looking Cholesky: the lower triangle of a [n, n] becomes L with a = L Lᵀ (the upper
// triangle is left as garbage). Per block column of kNb: factor the diagonal block, solve the panel below it
// (rows in parallel), then A22 −= L21·L21ᵀ as one GEMM. O(n³/3) in the GEMM, O(n²·kNb) in the rest.
// Returns false if a pivot is not positive.
bool cholesky_lower(std::vector<float>& a, int64_t n, ThreadPool& pool) {
  std::vector<float> xneg, bt;
  for (int64_t k0 = 0; k0 < n; k0 += kNb) {
    const int64_t kb = std::min(kNb, n - k0), k1 = k0 + kb;
    for (int64_t j = k0; j < k1; ++j) {  // diagonal block
      float* rj = a.data() + j * n;
      const double d = double(rj[j]) - dotf(rj + k0, rj + k0, j - k0);
      if (!(d > 0.0) || !std::isfinite(d)) return false;
      rj[j] = float(std::sqrt(d));
      for (int64_t i = j + 1; i < k1; ++i) {
        float* ri = a.data() + i * n;
        ri[j] = float((double(ri[j]) - dotf(ri + k0, rj + k0, j - k0)) / rj[j]);
      }
    }
    const int64_t m = n - k1;
    if (m == 0) break;
    auto panel = [&](int64_t b, int64_t e) {  // L21 = A21 · L11⁻ᵀ, row by row
      for (int64_t i = k1 + b; i < k1 + e; ++i) {
        float* ri = a.data() + i * n;
        for (int64_t j = k0; j < k1; ++j) {
          const float* rj = a.data() + j * n;
          ri[j] = float((double(ri[j]) - dotf(ri + k0, rj + k0, j - k0)) / rj[j]);
        }
      }
    };
    if (m * kb * kb > 1 << 18) pool.parallel_for(m, panel); else panel(0, m);
    // A22 [m, m] += (−L21) [m, kb] · L21ᵀ [kb, m]
    xneg.resize(size_t(m * kb));
    bt.resize(size_t(kb * m));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < kb; ++j) {
        const float v = a[size_t((k1 + i) * n + k0 + j)];
        xneg[size_t(i * kb + j)] = -v;
        bt[size_t(j * m + i)] = v;
      }
    sgemm(xneg.data(), kb, bt.data(), m, a.data() + k1 * n + k1, n, m, kb, m, /*accumulate=*/true, pool);
  }
  return true;
}

// m = l⁻¹ for lower-triangular l [n, n] by block rows: M_i = L_ii⁻¹ (E_i − L_i,<i · M_<i), the product one GEMM
// (only columns < i0 of the earlier block rows are non-zero), the small triangular solve row by row.
std::vector<float> invert_lower(const std::vector<float>& l, int64_t n, ThreadPool& pool) {
  std::vector<float> m(static_cast<size_t>(n * n), 0.0f), xneg;
  for (int64_t i0 = 0; i0 < n; i0 += kNb) {
    const int64_t ib = std::min(kNb, n - i0);
    float* mi = m.data() + i0 * n;  // block row [ib, n]
    for (int64_t r = 0; r < ib; ++r) mi[r * n + i0 + r] = 1.0f;
    if (i0 > 0) {  // M_i[:, 0:i0] = −L[i0:i0+ib, 0:i0] · M[0:i0, 0:i0]
      xneg.resize(size_t(ib * i0));
      for (int64_t r = 0; r < ib; ++r)
        for (int64_t c = 0; c < i0; ++c) xneg[size_t(r * i0 + c)] = -l[size_t((i0 + r) * n + c)];
      sgemm(xneg.data(), i0, m.data(), n, mi, n, ib, i0, i0, /*accumulate=*/false, pool);
    }
    // L_ii · M_i = R (rows of M_i hold R now): forward substitution over the block's rows, columns 0..i0+r
    for (int64_t r = 0; r < ib; ++r) {
      float* row = mi + r * n;
      const float* lr = l.data() + (i0 + r) * n + i0;
      const int64_t cols = i0 + r + 1;
      for (int64_t k = 0; k < r; ++k) {
        const float c = lr[k];
        if (c == 0.0f) continue;
        const float* rk = mi + k * n;
        for (int64_t j = 0; j < cols; ++j) row[j] -= c * rk[j];
      }
      const float inv = 1.0f / lr[r];
      for (int64_t j = 0; j < cols; ++j) row[j] *= inv;
    }
  }
  return m;
}

}  // namespace

std::vector<float> gram_matrix(const float* x, int64_t n, int64_t in, const float* div, ThreadPool& pool) {
  std::vector<float> g(static_cast<size_t>(in * in), 0.0f);
  if (n <= 0) return g;
  std::vector<float> chunk(static_cast<size_t>(kGramChunk * in)), chunk_t(static_cast<size_t>(kGramChunk * in));
  for (int64_t t0 = 0; t0 < n; t0 += kGramChunk) {
    const int64_t c = std::min(kGramChunk, n - t0);
    for (int64_t t = 0; t < c; ++t)
      for (int64_t i = 0; i < in; ++i) {
        const float v = x[(t0 + t) * in + i] / (div ? div[i] : 1.0f);
        chunk[size_t(t * in + i)] = v;
        chunk_t[size_t(i * c + t)] = v;
      }
    // g[in, in] += chunk_tᵀ… i.e. Σ_t x_t x_tᵀ: X = chunk_t [in, c], B = chunk [c, in]
    sgemm(chunk_t.data(), c, chunk.data(), in, g.data(), in, in, c, in, /*accumulate=*/t0 > 0, pool);
  }
  const float inv_n = 1.0f / float(n);
  for (float& v : g) v *= inv_n;
  return g;
}

std::vector<float> inverse_hessian_factor(const std::vector<float>& gram, int64_t in, double damp, ThreadPool& pool) {
  if (int64_t(gram.size()) != in * in) throw Error("gptq: Hessian is not [in, in]");
  double mean_diag = 0;
  for (int64_t i = 0; i < in; ++i) mean_diag += gram[size_t(i * in + i)] > 0 ? gram[size_t(i * in + i)] : 1.0;
  mean_diag /= double(std::max<int64_t>(in, 1));
  for (int attempt = 0; attempt < 4; ++attempt, damp *= 10) {
    // a = J (H + λI) J (J reverses the channel order): its lower factor Lr gives H + λI = V Vᵀ with
    // V = J Lr J upper, so (H + λI)⁻¹ = V⁻ᵀ V⁻¹ and U = V⁻¹ = J Lr⁻¹ J.
    std::vector<float> a(static_cast<size_t>(in * in));
    const double lambda = damp * mean_diag;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < in; ++j) {
        double v = double(gram[size_t((in - 1 - i) * in + (in - 1 - j))]);
        if (i == j) v = (v > 0 ? v : 1.0) + lambda;
        a[size_t(i * in + j)] = float(v);
      }
    if (!cholesky_lower(a, in, pool)) continue;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = i + 1; j < in; ++j) a[size_t(i * in + j)] = 0.0f;
    const std::vector<float> m = invert_lower(a, in, pool);
    std::vector<float> u(static_cast<size_t>(in * in), 0.0f);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = i; j < in; ++j) u[size_t(i * in + j)] = m[size_t((in - 1 - i) * in + (in - 1 - j))];
    return u;
  }
  throw Error("gptq: the calibration Hessian [" + std::to_string(in) + ", " + std::to_string(in) +
              "] is not positive definite even with damping " + std::to_string(damp / 10));
}

std::vector<int64_t> act_order_permutation(const std::vector<float>& gram, int64_t in) {
  std::vector<int64_t> perm(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) perm[size_t(i)] = i;
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int64_t a, int64_t b) { return gram[size_t(a * in + a)] > gram[size_t(b * in + b)]; });
  return perm;
}

GptqFactor gptq_factor(const std::vector<float>& gram, int64_t in, ThreadPool& pool, double damp, bool act_order) {
  if (int64_t(gram.size()) != in * in) throw Error("gptq: Hessian is not [in, in]");
  GptqFactor f;
  f.in = in;
  f.perm.resize(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) f.perm[size_t(i)] = i;
  if (act_order) f.perm = act_order_permutation(gram, in);
  std::vector<float> hp(gram.size());
  for (int64_t a = 0; a < in; ++a)
    for (int64_t b = 0; b < in; ++b) hp[size_t(a * in + b)] = gram[size_t(f.perm[size_t(a)] * in + f.perm[size_t(b)])];
  f.u = inverse_hessian_factor(hp, in, damp, pool);
  return f;
}

QuantizedLinear gptq_quantize_linear(const float* w_t, int64_t in, int64_t out, const std::vector<float>& gram,
                                     const QuantSpec& spec, ThreadPool& pool, double damp, bool act_order) {
  return gptq_quantize_linear(w_t, in, out, gptq_factor(gram, in, pool, damp, act_order), spec, pool);
}

QuantizedLinear gptq_quantize_linear(const float* w_t, int64_t in, int64_t out, const GptqFactor& factor,
                                     const QuantSpec& spec, ThreadPool& pool) {
  if (factor.in != in) throw Error("gptq: factor is for in_features " + std::to_string(factor.in) + ", not " + std::to_string(in));
  // Scales and zeros exactly as round-to-nearest would store them; only the codes change.
  QuantizedLinear ql = quantize_linear(w_t, in, out, spec, pool);
  const std::vector<int64_t>& perm = factor.perm;
  const std::vector<float>& u = factor.u;
  std::vector<float> w(static_cast<size_t>(in * out));  // working copy (permuted rows), updated as errors arrive
  for (int64_t a = 0; a < in; ++a)
    std::copy(w_t + perm[size_t(a)] * out, w_t + (perm[size_t(a)] + 1) * out, w.begin() + a * out);
  std::vector<float> s(ql.scales.size()), z(ql.zeros.size());
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = f16_to_f32(ql.scales[i]);
    z[i] = float(ql.zeros[i]);
  }
  const int64_t G = spec.group;
  std::vector<float> err(static_cast<size_t>(kBlock * out)), xu;
  for (int64_t b0 = 0; b0 < in; b0 += kBlock) {
    const int64_t b1 = std::min(in, b0 + kBlock), nb = b1 - b0;
    // Within the block, columns are independent: each task rounds its columns row by row.
    const int64_t chunks = (out + kColChunk - 1) / kColChunk;
    pool.parallel_for(chunks, [&](int64_t cb, int64_t ce) {
      for (int64_t ch = cb; ch < ce; ++ch) {
        const int64_t c0 = ch * kColChunk, c1 = std::min(out, c0 + kColChunk);
        for (int64_t i = b0; i < b1; ++i) {
          const int64_t src = perm[size_t(i)], g = src / G;
          const float uii = float(u[size_t(i * in + i)]);
          float* wi = w.data() + i * out;
          float* ei = err.data() + (i - b0) * out;
          for (int64_t o = c0; o < c1; ++o) {
            const float sc = s[size_t(g * out + o)], zc = z[size_t(g * out + o)];
            const float r = std::nearbyint(wi[o] / sc);  // half to even, like torch.round
            const float q = spec.zero_point ? std::clamp(r + zc, 0.0f, 15.0f) : std::clamp(r, -8.0f, 7.0f) + 8.0f;
            ql.q[size_t(src * out + o)] = uint8_t(q);
            ei[o] = (wi[o] - (q - zc) * sc) / uii;
          }
          for (int64_t j = i + 1; j < b1; ++j) {
            const float uij = float(u[size_t(i * in + j)]);
            float* wj = w.data() + j * out;
            for (int64_t o = c0; o < c1; ++o) wj[o] -= uij * ei[o];
          }
        }
      }
    });
    if (b1 < in) {
      // rows after the block: w[b1:, :] −= U[b0:b1, b1:]ᵀ · err   (X [in − b1, nb] = −U blockᵀ)
      const int64_t rest = in - b1;
      xu.assign(static_cast<size_t>(rest * nb), 0.0f);
      for (int64_t k = 0; k < nb; ++k)
        for (int64_t j = 0; j < rest; ++j) xu[size_t(j * nb + k)] = -float(u[size_t((b0 + k) * in + b1 + j)]);
      sgemm(xu.data(), nb, err.data(), out, w.data() + b1 * out, out, rest, nb, out, /*accumulate=*/true, pool);
    }
  }
  return ql;
}

}  // namespace mixq::quant
