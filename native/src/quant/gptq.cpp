#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <immintrin.h>

#include "cpu_features.h"
#include "error.h"
#include "quant/sgemm.h"
#include "tensor.h"
#include "thread_pool.h"

namespace mixq::quant {
namespace {

// Σ a[k]·b[k], k < n, with 4 independent partial sums (the loop is latency-bound otherwise).
inline double dot_plain(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    s0 += a[k] * b[k];
    s1 += a[k + 1] * b[k + 1];
    s2 += a[k + 2] * b[k + 2];
    s3 += a[k + 3] * b[k + 3];
  }
  for (; k < n; ++k) s0 += a[k] * b[k];
  return (s0 + s1) + (s2 + s3);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) double dot_avx2(const double* a, const double* b, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + k), _mm256_loadu_pd(b + k), s0);
    s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + k + 4), _mm256_loadu_pd(b + k + 4), s1);
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(s0, s1));
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}
#endif

inline double dot(const double* a, const double* b, int64_t n) {
#if defined(__x86_64__)
  static const bool avx2 = cpu_caps().avx2 && cpu_caps().fma;
  if (avx2) return dot_avx2(a, b, n);
#endif
  return dot_plain(a, b, n);
}

constexpr int64_t kGramChunk = 256;  // tokens per Gram update
constexpr int64_t kBlock = 128;      // rows rounded before one lazy GEMM update of the rest
constexpr int64_t kColChunk = 256;   // columns per thread task inside a block

// In place: the lower triangle of a [n, n] becomes L with a = L Lᵀ. Returns false if a pivot is not positive.
bool cholesky_lower(std::vector<double>& a, int64_t n, ThreadPool& pool) {
  for (int64_t j = 0; j < n; ++j) {
    double* rj = a.data() + j * n;
    const double d = rj[j] - dot(rj, rj, j);
    if (!(d > 0.0) || !std::isfinite(d)) return false;
    const double ljj = std::sqrt(d);
    rj[j] = ljj;
    auto rows = [&](int64_t b, int64_t e) {
      for (int64_t i = j + 1 + b; i < j + 1 + e; ++i) {
        double* ri = a.data() + i * n;
        ri[j] = (ri[j] - dot(ri, rj, j)) / ljj;
      }
    };
    const int64_t below = n - j - 1;
    if (below * j > 1 << 16) pool.parallel_for(below, rows); else rows(0, below);
  }
  return true;
}

// mt = (l⁻¹)ᵀ for lower-triangular l [n, n]: column j of l⁻¹ solves l·m = e_j by forward substitution,
// m_i = (δ_ij − Σ_{j≤k<i} l_ik m_k) / l_ii for i ≥ j; columns are independent (threads) and each is stored as a
// contiguous row of mt, so every step is a contiguous dot product.
std::vector<double> invert_lower_transposed(const std::vector<double>& l, int64_t n, ThreadPool& pool) {
  std::vector<double> mt(static_cast<size_t>(n * n), 0.0);
  auto cols = [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      double* m = mt.data() + j * n;  // m[i], i ≥ j
      for (int64_t i = j; i < n; ++i) {
        const double* li = l.data() + i * n;
        const double acc = (i == j ? 1.0 : 0.0) - dot(li + j, m + j, i - j);
        m[i] = acc / li[i];
      }
    }
  };
  if (n >= 256) pool.parallel_for(n, cols); else cols(0, n);
  return mt;
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

std::vector<double> inverse_hessian_factor(const std::vector<float>& gram, int64_t in, double damp, ThreadPool& pool) {
  if (int64_t(gram.size()) != in * in) throw Error("gptq: Hessian is not [in, in]");
  double mean_diag = 0;
  for (int64_t i = 0; i < in; ++i) mean_diag += gram[size_t(i * in + i)] > 0 ? gram[size_t(i * in + i)] : 1.0;
  mean_diag /= double(std::max<int64_t>(in, 1));
  for (int attempt = 0; attempt < 4; ++attempt, damp *= 10) {
    // a = J (H + λI) J (J reverses the channel order): its lower factor Lr gives H + λI = V Vᵀ with
    // V = J Lr J upper, so (H + λI)⁻¹ = V⁻ᵀ V⁻¹ and U = V⁻¹ = J Lr⁻¹ J.
    std::vector<double> a(static_cast<size_t>(in * in));
    const double lambda = damp * mean_diag;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j <= i; ++j) {  // lower triangle of a only
        const int64_t si = in - 1 - i, sj = in - 1 - j;
        double v = double(gram[size_t(si * in + sj)]);
        if (i == j) v = (v > 0 ? v : 1.0) + lambda;
        a[size_t(i * in + j)] = v;
      }
    if (!cholesky_lower(a, in, pool)) continue;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = i + 1; j < in; ++j) a[size_t(i * in + j)] = 0.0;
    const std::vector<double> mt = invert_lower_transposed(a, in, pool);  // mt[c][r] = (Lr⁻¹)[r][c]
    std::vector<double> u(static_cast<size_t>(in * in), 0.0);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = i; j < in; ++j) u[size_t(i * in + j)] = mt[size_t((in - 1 - j) * in + (in - 1 - i))];
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
  const std::vector<double>& u = factor.u;
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
