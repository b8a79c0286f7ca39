#include "quant/calib_forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "quant/sgemm.h"
#include "thread_pool.h"

namespace mixq::quant {

void rms_norm_rows(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* xr = x + t * d;
      float ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += xr[i] * xr[i];
      const float r = 1.0f / std::sqrt(ss / float(d) + eps);
      for (int64_t i = 0; i < d; ++i) y[t * d + i] = w[i] * (xr[i] * r);
    }
  });
}

namespace {

// cos/sin [L, hd/2] as transformers computes them in f32: inv_freq = 1 / theta^(2i/hd), angle = pos · inv_freq.
void rope_tables(int64_t L, int hd, double theta, std::vector<float>& cos_t, std::vector<float>& sin_t) {
  const int half = hd / 2;
  cos_t.resize(static_cast<size_t>(L * half));
  sin_t.resize(static_cast<size_t>(L * half));
  for (int i = 0; i < half; ++i) {
    const float inv_freq = 1.0f / std::pow(float(theta), float(2 * i) / float(hd));
    for (int64_t p = 0; p < L; ++p) {
      const float a = float(p) * inv_freq;
      cos_t[size_t(p * half + i)] = std::cos(a);
      sin_t[size_t(p * half + i)] = std::sin(a);
    }
  }
}

// rotate_half convention on one head vector x[hd] at position p.
inline void apply_rope(const float* x, float* y, int hd, const float* c, const float* s) {
  const int half = hd / 2;
  for (int i = 0; i < half; ++i) {
    y[i] = x[i] * c[i] - x[i + half] * s[i];
    y[i + half] = x[i + half] * c[i] + x[i] * s[i];
  }
}

}  // namespace

void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& sh, float* ctx,
                      ThreadPool& pool) {
  const int64_t L = sh.seq_len;
  const int H = sh.heads, KV = sh.kv_heads, hd = sh.head_dim;
  const int64_t qd = int64_t(H) * hd, kvd = int64_t(KV) * hd;
  std::vector<float> cos_t, sin_t;
  rope_tables(L, hd, sh.rope_theta, cos_t, sin_t);
  const float scale = 1.0f / std::sqrt(float(hd));
  pool.parallel_for(sh.samples * H, [&](int64_t b, int64_t e) {
    std::vector<float> qh(static_cast<size_t>(L * hd)), kt(static_cast<size_t>(hd * L)), vh(static_cast<size_t>(L * hd)), sc(static_cast<size_t>(L * L)), tmp(static_cast<size_t>(hd));
    for (int64_t item = b; item < e; ++item) {
      const int64_t s = item / H;
      const int h = int(item % H), kh = h / (H / KV);
      const int64_t base = s * L;
      for (int64_t p = 0; p < L; ++p) {
        const float* c = cos_t.data() + p * (hd / 2);
        const float* sn = sin_t.data() + p * (hd / 2);
        apply_rope(q + (base + p) * qd + int64_t(h) * hd, qh.data() + p * hd, hd, c, sn);
        apply_rope(k + (base + p) * kvd + int64_t(kh) * hd, tmp.data(), hd, c, sn);
        for (int j = 0; j < hd; ++j) kt[size_t(j * L + p)] = tmp[size_t(j)];
        std::memcpy(vh.data() + p * hd, v + (base + p) * kvd + int64_t(kh) * hd, sizeof(float) * size_t(hd));
      }
      sgemm_st(qh.data(), hd, kt.data(), L, sc.data(), L, L, hd, L, false);  // scores [L, L]
      for (int64_t p = 0; p < L; ++p) {
        float* row = sc.data() + p * L;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= p; ++j) mx = std::max(mx, row[j] * scale);
        float sum = 0;
        for (int64_t j = 0; j <= p; ++j) sum += (row[j] = std::exp(row[j] * scale - mx));
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j <= p; ++j) row[j] *= inv;
        for (int64_t j = p + 1; j < L; ++j) row[j] = 0.0f;
      }
      // ctx rows of this head: [L, hd] with row stride qd
      sgemm_st(sc.data(), L, vh.data(), hd, ctx + base * qd + int64_t(h) * hd, qd, L, L, hd, false);
    }
  });
}

void attention_block(const float* x, int64_t d, const float* q_t, const float* k_t, const float* v_t, const float* o_t,
                     const AttentionShape& sh, float* out, std::vector<float>* ctx_out, ThreadPool& pool) {
  const int64_t N = sh.samples * sh.seq_len;
  const int64_t qd = int64_t(sh.heads) * sh.head_dim, kvd = int64_t(sh.kv_heads) * sh.head_dim;
  std::vector<float> q(static_cast<size_t>(N * qd)), k(static_cast<size_t>(N * kvd)), v(static_cast<size_t>(N * kvd)), ctx(static_cast<size_t>(N * qd));
  sgemm(x, d, q_t, qd, q.data(), qd, N, d, qd, false, pool);
  sgemm(x, d, k_t, kvd, k.data(), kvd, N, d, kvd, false, pool);
  sgemm(x, d, v_t, kvd, v.data(), kvd, N, d, kvd, false, pool);
  causal_attention(q.data(), k.data(), v.data(), sh, ctx.data(), pool);
  sgemm(ctx.data(), qd, o_t, d, out, d, N, qd, d, false, pool);
  if (ctx_out) *ctx_out = std::move(ctx);
}

Routing route_tokens(const float* x, int64_t n, int64_t d, const float* gate_t, int experts, int top_k,
                     ThreadPool& pool) {
  std::vector<float> logits(static_cast<size_t>(n * experts));
  sgemm(x, d, gate_t, experts, logits.data(), experts, n, d, experts, false, pool);
  Routing r;
  r.tokens.resize(static_cast<size_t>(experts));
  r.weights.resize(static_cast<size_t>(experts));
  std::vector<float> p(static_cast<size_t>(experts));
  std::vector<int> idx(static_cast<size_t>(experts));
  for (int64_t t = 0; t < n; ++t) {
    const float* l = logits.data() + t * experts;
    const float mx = *std::max_element(l, l + experts);
    float sum = 0;
    for (int e = 0; e < experts; ++e) sum += (p[size_t(e)] = std::exp(l[e] - mx));
    for (int e = 0; e < experts; ++e) p[size_t(e)] /= sum;
    for (int e = 0; e < experts; ++e) idx[size_t(e)] = e;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
    float ksum = 0;
    for (int j = 0; j < top_k; ++j) ksum += p[size_t(idx[size_t(j)])];
    for (int j = 0; j < top_k; ++j) {
      const int e = idx[size_t(j)];
      r.tokens[size_t(e)].push_back(int32_t(t));
      r.weights[size_t(e)].push_back(p[size_t(e)] / ksum);
    }
  }
  return r;
}

void expert_forward(const float* a, int64_t n_e, int64_t d, int64_t inter, const float* w1_t, const float* w3_t,
                    const float* w2_t, float* h, float* y, ThreadPool& pool) {
  if (n_e == 0) return;
  std::vector<float> up(static_cast<size_t>(n_e * inter));
  sgemm(a, d, w1_t, inter, h, inter, n_e, d, inter, false, pool);
  sgemm(a, d, w3_t, inter, up.data(), inter, n_e, d, inter, false, pool);
  for (int64_t i = 0; i < n_e * inter; ++i) {
    const float g = h[i];
    h[i] = g / (1.0f + std::exp(-g)) * up[size_t(i)];
  }
  sgemm(h, inter, w2_t, d, y, d, n_e, inter, d, false, pool);
}

void gather_rows(const float* x, int64_t d, const std::vector<int32_t>& rows, float* dst) {
  for (size_t r = 0; r < rows.size(); ++r) std::memcpy(dst + int64_t(r) * d, x + int64_t(rows[r]) * d, sizeof(float) * size_t(d));
}

}  // namespace mixq::quant
