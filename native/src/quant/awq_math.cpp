#include "quant/awq_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "error.h"
#include "sgemm.h"
#include "tensor.h"
#include "thread_pool.h"

namespace mixq::quant {
namespace {

// Round half to even (torch.round) for |x| < 2^22; callers clamp first (results are clamped to 0..15 anyway).
inline float round_even(float x) {
  const float magic = 12582912.0f;  // 1.5 · 2^23
  x = std::clamp(x, -2097152.0f, 2097152.0f);
  return (x + magic) - magic;       // exact under IEEE round-to-nearest-even (no -ffast-math here)
}

constexpr int64_t kColBlock = 256;

// Scale/zero for one (group, column) from its min and max.
inline void group_params(float mn, float mx, bool zero_point, float* s, float* z, uint16_t* s16) {
  float scale;
  if (zero_point) {
    scale = std::max(mx - mn, 1e-5f) / 15.0f;
  } else {
    scale = std::max(std::max(std::fabs(mn), std::fabs(mx)), 1e-5f) / 7.0f;
  }
  *s16 = f32_to_f16(scale);
  *s = f16_to_f32(*s16);
  if (*s == 0.0f) {  // below fp16's smallest subnormal: keep the smallest positive scale
    *s16 = 1;
    *s = f16_to_f32(1);
  }
  *z = zero_point ? std::clamp(-round_even(mn / *s), 0.0f, 15.0f) : 8.0f;
}

// Quantizes columns [c0, c1) of w_t; writes codes (when q != nullptr) and/or fake-quantized values.
void quantize_cols(const float* w_t, int64_t in, int64_t out, const QuantSpec& spec, int64_t c0, int64_t c1,
                   QuantizedLinear* ql, float* fake) {
  const int64_t nc = c1 - c0, G = spec.group;
  std::vector<float> mn(static_cast<size_t>(nc)), mx(static_cast<size_t>(nc)), s(static_cast<size_t>(nc)), z(static_cast<size_t>(nc));
  for (int64_t g = 0; g < in / G; ++g) {
    std::fill(mn.begin(), mn.end(), std::numeric_limits<float>::infinity());
    std::fill(mx.begin(), mx.end(), -std::numeric_limits<float>::infinity());
    for (int64_t i = g * G; i < (g + 1) * G; ++i) {
      const float* row = w_t + i * out + c0;
      for (int64_t c = 0; c < nc; ++c) {
        mn[c] = std::min(mn[c], row[c]);
        mx[c] = std::max(mx[c], row[c]);
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      uint16_t s16;
      group_params(mn[c], mx[c], spec.zero_point, &s[c], &z[c], &s16);
      if (ql) {
        ql->scales[size_t(g * out + c0 + c)] = s16;
        ql->zeros[size_t(g * out + c0 + c)] = uint8_t(z[c]);
      }
    }
    const float lo = spec.zero_point ? 0.0f : -8.0f, hi = spec.zero_point ? 15.0f : 7.0f;
    for (int64_t i = g * G; i < (g + 1) * G; ++i) {
      const float* row = w_t + i * out + c0;
      for (int64_t c = 0; c < nc; ++c) {
        // zero point: q = clamp(round(w/s) + z); symmetric: q − 8 = clamp(round(w/s)) and z = 8.
        const float r = spec.zero_point ? std::clamp(round_even(row[c] / s[c]) + z[c], lo, hi)
                                        : std::clamp(round_even(row[c] / s[c]), lo, hi) + 8.0f;
        if (ql) ql->q[size_t(i * out + c0 + c)] = uint8_t(r);
        if (fake) fake[i * out + c0 + c] = (r - z[c]) * s[c];
      }
    }
  }
}

void check_spec(int64_t in, int64_t out, const QuantSpec& spec) {
  if (spec.group <= 0 || in % spec.group != 0) {
    throw Error("group size " + std::to_string(spec.group) + " does not divide in_features " + std::to_string(in));
  }
  if (out % 8 != 0) throw Error("out_features " + std::to_string(out) + " is not a multiple of 8 (int4 packing)");
}

}  // namespace

void QuantizedLinear::dequantize(float* w_t) const {
  for (int64_t i = 0; i < in; ++i) {
    const int64_t g = i / group;
    for (int64_t o = 0; o < out; ++o) {
      w_t[i * out + o] = (float(q[size_t(i * out + o)]) - float(zeros[size_t(g * out + o)])) *
                         f16_to_f32(scales[size_t(g * out + o)]);
    }
  }
}

QuantizedLinear quantize_linear(const float* w_t, int64_t in, int64_t out, const QuantSpec& spec, ThreadPool& pool) {
  check_spec(in, out, spec);
  QuantizedLinear ql;
  ql.in = in;
  ql.out = out;
  ql.group = spec.group;
  ql.q.resize(static_cast<size_t>(in * out));
  ql.zeros.resize(static_cast<size_t>(in / spec.group * out));
  ql.scales.resize(static_cast<size_t>(in / spec.group * out));
  const int64_t blocks = (out + kColBlock - 1) / kColBlock;
  pool.parallel_for(blocks, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk)
      quantize_cols(w_t, in, out, spec, blk * kColBlock, std::min(out, (blk + 1) * kColBlock), &ql, nullptr);
  });
  return ql;
}

void fake_quantize(float* w_t, int64_t in, int64_t out, const QuantSpec& spec, ThreadPool& pool) {
  check_spec(in, out, spec);
  const int64_t blocks = (out + kColBlock - 1) / kColBlock;
  pool.parallel_for(blocks, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk)
      quantize_cols(w_t, in, out, spec, blk * kColBlock, std::min(out, (blk + 1) * kColBlock), nullptr, w_t);
  });
}

std::vector<float> weight_channel_mean(const std::vector<const float*>& w_ts, const std::vector<int64_t>& outs,
                                       int64_t in, int group) {
  std::vector<double> sum(static_cast<size_t>(in), 0.0);
  int64_t rows = 0;
  std::vector<float> gmax;
  for (size_t m = 0; m < w_ts.size(); ++m) {
    const float* w = w_ts[m];
    const int64_t out = outs[m];
    rows += out;
    gmax.assign(static_cast<size_t>(out), 0.0f);
    for (int64_t g = 0; g < in / group; ++g) {
      std::fill(gmax.begin(), gmax.end(), 0.0f);
      for (int64_t i = g * group; i < (g + 1) * group; ++i)
        for (int64_t o = 0; o < out; ++o) gmax[o] = std::max(gmax[o], std::fabs(w[i * out + o]));
      for (int64_t i = g * group; i < (g + 1) * group; ++i) {
        double acc = 0;
        for (int64_t o = 0; o < out; ++o) acc += std::fabs(w[i * out + o]) / (gmax[o] + 1e-6f);
        sum[size_t(i)] += acc;
      }
    }
  }
  std::vector<float> mean(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) mean[size_t(i)] = float(sum[size_t(i)] / double(std::max<int64_t>(rows, 1)));
  return mean;
}

std::vector<float> activation_channel_mean(const float* x, int64_t n, int64_t in) {
  std::vector<double> sum(static_cast<size_t>(in), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < in; ++i) sum[size_t(i)] += std::fabs(x[t * in + i]);
  std::vector<float> mean(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) mean[size_t(i)] = float(sum[size_t(i)] / double(std::max<int64_t>(n, 1)));
  return mean;
}

std::vector<float> duo_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, float alpha) {
  std::vector<float> s(x_mean.size());
  float mx = 0, mn = std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = std::max(std::pow(x_mean[i], alpha) / (std::pow(w_mean[i], 1.0f - alpha) + 1e-4f), 1e-4f);
    mx = std::max(mx, s[i]);
    mn = std::min(mn, s[i]);
  }
  const float norm = std::sqrt(mx * mn);
  for (float& v : s) v /= norm;
  return s;
}

double clip_search_apply(float* w_t, int64_t in, int64_t out, const float* x, int64_t n, const QuantSpec& spec,
                         ThreadPool& pool) {
  check_spec(in, out, spec);
  if (n <= 0) return 0.0;
  const int64_t G = spec.group, groups = in / G;
  constexpr int kSteps = 10;        // i = 0..9 of a 20-point grid: shrink at most 45 %
  std::vector<float> gram(static_cast<size_t>(G * G)), xg_t(static_cast<size_t>(G * n));
  std::vector<float> cand(static_cast<size_t>(G * out)), diff(static_cast<size_t>(G * out)), e(static_cast<size_t>(G * out));
  std::vector<float> org_max(static_cast<size_t>(out)), best_err(static_cast<size_t>(out)), best_c(static_cast<size_t>(out)), err(static_cast<size_t>(out));
  double shrink_sum = 0;
  for (int64_t g = 0; g < groups; ++g) {
    // Gram_g = X_gᵀ X_g / n: [G, G]
    for (int64_t t = 0; t < n; ++t)
      for (int64_t a = 0; a < G; ++a) xg_t[size_t(a * n + t)] = x[t * in + g * G + a] / float(n);
    sgemm(xg_t.data(), n, x + g * G, in, gram.data(), G, G, n, G, false, pool);
    const float* wg = w_t + g * G * out;  // rows of this group: [G, out]
    std::fill(org_max.begin(), org_max.end(), 0.0f);
    for (int64_t a = 0; a < G; ++a)
      for (int64_t o = 0; o < out; ++o) org_max[size_t(o)] = std::max(org_max[size_t(o)], std::fabs(wg[a * out + o]));
    std::fill(best_err.begin(), best_err.end(), std::numeric_limits<float>::infinity());
    for (int step = 0; step < kSteps; ++step) {
      const float shrink = 1.0f - float(step) / 20.0f;
      for (int64_t a = 0; a < G; ++a)
        for (int64_t o = 0; o < out; ++o) {
          const float c = org_max[size_t(o)] * shrink;
          cand[size_t(a * out + o)] = std::clamp(wg[a * out + o], -c, c);
        }
      QuantSpec one = spec;
      one.group = int(G);
      fake_quantize(cand.data(), G, out, one, pool);
      for (size_t k = 0; k < cand.size(); ++k) diff[k] = cand[k] - wg[k];
      sgemm(gram.data(), G, diff.data(), out, e.data(), out, G, G, out, false, pool);  // E = Gram · D
      std::fill(err.begin(), err.end(), 0.0f);
      for (int64_t a = 0; a < G; ++a)
        for (int64_t o = 0; o < out; ++o) err[size_t(o)] += diff[size_t(a * out + o)] * e[size_t(a * out + o)];
      for (int64_t o = 0; o < out; ++o)
        if (err[size_t(o)] < best_err[size_t(o)]) {
          best_err[size_t(o)] = err[size_t(o)];
          best_c[size_t(o)] = org_max[size_t(o)] * shrink;
          if (step == 0) best_c[size_t(o)] = std::numeric_limits<float>::infinity();  // no clipping
        }
    }
    float* wgm = w_t + g * G * out;
    for (int64_t a = 0; a < G; ++a)
      for (int64_t o = 0; o < out; ++o) wgm[a * out + o] = std::clamp(wgm[a * out + o], -best_c[size_t(o)], best_c[size_t(o)]);
    for (int64_t o = 0; o < out; ++o)
      shrink_sum += std::isinf(best_c[size_t(o)]) ? 0.0 : 1.0 - double(best_c[size_t(o)]) / double(org_max[size_t(o)]);
  }
  return shrink_sum / double(groups * out);
}

}  // namespace mixq::quant
