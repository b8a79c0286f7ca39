// quantize_layer: steps 2–5 of quantize.h for one decoder layer, on f32 weights in memory.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "error.h"
#include "quant/calib_forward.h"
#include "quant/quantize.h"
#include "quant/sgemm.h"
#include "thread_pool.h"

namespace mixq::quant {
namespace {

using Clock = std::chrono::steady_clock;

void check_cancel(const std::atomic<bool>* c) {
  if (c && c->load()) throw Cancelled();
}

// w_t[i][·] *= s[i]  (scale the input channels of a Linear)
void scale_rows(float* w_t, int64_t in, int64_t out, const float* s) {
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) w_t[i * out + o] *= s[i];
}
// w_t[·][o] /= s[o]  (fold 1/s into the output channels of the previous Linear)
void divide_cols(float* w_t, int64_t in, int64_t out, const float* s) {
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) w_t[i * out + o] /= s[o];
}
// x[n][i] /= s[i]
void divide_channels(float* x, int64_t n, int64_t d, const float* s) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < d; ++i) x[t * d + i] /= s[i];
}

double mse(const float* a, const float* b, size_t n) {
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = double(a[i]) - double(b[i]);
    acc += e * e;
  }
  return n ? acc / double(n) : 0.0;
}

// dst = Q(W·s)/s: the weights the scale search evaluates for scales s.
void fake_quant_scaled(const std::vector<float>& w_t, int64_t in, int64_t out, const std::vector<float>& s,
                       const QuantSpec& spec, std::vector<float>& dst, ThreadPool& pool) {
  dst = w_t;
  scale_rows(dst.data(), in, out, s.data());
  fake_quantize(dst.data(), in, out, spec, pool);
  for (int64_t i = 0; i < in; ++i) {
    const float inv = s[size_t(i)];
    for (int64_t o = 0; o < out; ++o) dst[size_t(i * out + o)] /= inv;
  }
}

// Every ceil(n / budget)-th row: at most `budget` rows spread over the whole set.
std::vector<int32_t> subsample_rows(int64_t n, int budget) {
  std::vector<int32_t> rows;
  if (n <= 0) return rows;
  const int64_t step = std::max<int64_t>(1, (n + budget - 1) / budget);
  for (int64_t t = 0; t < n; t += step) rows.push_back(int32_t(t));
  return rows;
}

// The folded norm: new = round(norm / s); the weights are scaled by s_eff = norm / new so the product is exact.
std::vector<float> fold_into_norm(std::vector<float>& norm, const std::vector<float>& s,
                                  const std::function<float(float)>& round_norm) {
  std::vector<float> s_eff(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const float folded = round_norm(norm[i] / s[i]);
    s_eff[i] = (folded != 0.0f && norm[i] != 0.0f) ? norm[i] / folded : s[i];
    norm[i] = folded;
  }
  return s_eff;
}

struct SearchResult {
  std::vector<float> scales;
  float alpha = -1;
};

// α grid search: loss(s) is evaluated for each of the 20 candidates; the lowest strictly-smaller loss wins.
template <class LossFn>
SearchResult search_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, LossFn loss,
                           const std::atomic<bool>* cancel) {
  SearchResult best;
  best.scales.assign(x_mean.size(), 1.0f);
  double best_loss = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 20; ++i) {
    check_cancel(cancel);
    const float alpha = float(i) / 20.0f;
    std::vector<float> s = duo_scales(x_mean, w_mean, alpha);
    const double l = loss(s);
    if (l < best_loss) {
      best_loss = l;
      best.scales = std::move(s);
      best.alpha = alpha;
    }
  }
  return best;  // all losses NaN: scales stay 1 (plain RTN for this group), alpha −1
}

}  // namespace

void quantize_layer(const ModelConfig& cfg, LayerF32& w, float* h, int64_t samples, int64_t seq_len,
                    const LayerQuantOptions& opts, LayerQuantized* out, ThreadPool& pool) {
  const int64_t d = cfg.hidden_size, inter = cfg.intermediate_size;
  const int E = cfg.num_local_experts, top_k = cfg.num_experts_per_tok;
  const int64_t qd = int64_t(cfg.num_attention_heads) * cfg.head_dim;
  const int64_t kvd = int64_t(cfg.num_key_value_heads) * cfg.head_dim;
  const int64_t N = samples * seq_len;
  const QuantSpec& spec = opts.spec;
  AttentionShape shape;
  shape.samples = samples;
  shape.seq_len = seq_len;
  shape.heads = cfg.num_attention_heads;
  shape.kv_heads = cfg.num_key_value_heads;
  shape.head_dim = cfg.head_dim;
  shape.rope_theta = cfg.rope_theta;
  const float eps = float(cfg.rms_norm_eps);

  out->best_alpha.assign(static_cast<size_t>(2 + E), -1.0f);
  out->phase_seconds.assign(6, 0.0);
  auto phase = [&](const char* name, double frac) {
    check_cancel(opts.cancel);
    if (opts.on_phase) opts.on_phase(name, frac);
  };
  auto t_phase = Clock::now();
  auto end_phase = [&](int idx) {
    const auto now = Clock::now();
    out->phase_seconds[size_t(idx)] += std::chrono::duration<double>(now - t_phase).count();
    t_phase = now;
  };

  if (opts.awq) {
    if (!h || N <= 0) throw Error("AWQ needs calibration activations (samples × seq_len > 0)");
    // ---- float forward: statistics, block outputs, and the next layer's input ----
    phase("forward", 0.0);
    std::vector<float> x1(static_cast<size_t>(N * d)), attn_fp(static_cast<size_t>(N * d)), ctx;
    rms_norm_rows(h, N, d, w.attn_norm.data(), eps, x1.data(), pool);
    attention_block(x1.data(), d, w.q_t.data(), w.k_t.data(), w.v_t.data(), w.o_t.data(), shape, attn_fp.data(), &ctx,
                    pool);
    std::vector<float> h_out(static_cast<size_t>(N * d)), x2(static_cast<size_t>(N * d));
    for (int64_t i = 0; i < N * d; ++i) h_out[size_t(i)] = h[i] + attn_fp[size_t(i)];
    rms_norm_rows(h_out.data(), N, d, w.post_norm.data(), eps, x2.data(), pool);
    const Routing routing = route_tokens(x2.data(), N, d, w.gate_t.data(), E, top_k, pool);
    std::vector<std::vector<float>> a(static_cast<size_t>(E));  // routed inputs per expert [n_e, d]
    std::vector<float> moe_fp(static_cast<size_t>(N * d), 0.0f), act, y;
    for (int e = 0; e < E; ++e) {
      const auto& rows = routing.tokens[size_t(e)];
      const int64_t ne = int64_t(rows.size());
      if (ne == 0) continue;
      a[size_t(e)].resize(static_cast<size_t>(ne * d));
      gather_rows(x2.data(), d, rows, a[size_t(e)].data());
      act.resize(static_cast<size_t>(ne * inter));
      y.resize(static_cast<size_t>(ne * d));
      const auto& ex = w.experts[size_t(e)];
      expert_forward(a[size_t(e)].data(), ne, d, inter, ex.w1_t.data(), ex.w3_t.data(), ex.w2_t.data(), act.data(),
                     y.data(), pool);
      for (int64_t r = 0; r < ne; ++r) {
        const float wt = routing.weights[size_t(e)][size_t(r)];
        float* dst = moe_fp.data() + int64_t(rows[size_t(r)]) * d;
        for (int64_t i = 0; i < d; ++i) dst[i] += wt * y[size_t(r * d + i)];
      }
    }
    for (int64_t i = 0; i < N * d; ++i) h_out[size_t(i)] += moe_fp[size_t(i)];
    end_phase(0);

    // ---- (1) input_layernorm → q, k, v; loss: self-attention output ----
    phase("search-attn", 0.1);
    std::vector<float> fq_q, fq_k, fq_v, attn_q(static_cast<size_t>(N * d));
    const std::vector<float> x1_mean = activation_channel_mean(x1.data(), N, d);
    const std::vector<float> attn_w_mean =
        weight_channel_mean({w.q_t.data(), w.k_t.data(), w.v_t.data()}, {qd, kvd, kvd}, d, spec.group);
    const SearchResult s1 = search_scales(x1_mean, attn_w_mean, [&](const std::vector<float>& s) {
      fake_quant_scaled(w.q_t, d, qd, s, spec, fq_q, pool);
      fake_quant_scaled(w.k_t, d, kvd, s, spec, fq_k, pool);
      fake_quant_scaled(w.v_t, d, kvd, s, spec, fq_v, pool);
      attention_block(x1.data(), d, fq_q.data(), fq_k.data(), fq_v.data(), w.o_t.data(), shape, attn_q.data(), nullptr,
                      pool);
      return mse(attn_q.data(), attn_fp.data(), attn_q.size());
    }, opts.cancel);
    out->best_alpha[0] = s1.alpha;
    end_phase(1);

    // ---- (3) post_attention_layernorm → w1, w3 of all experts (one scale); loss: MoE block output ----
    phase("search-moe", 0.3);
    std::vector<const float*> moe_ws;
    std::vector<int64_t> moe_outs;
    for (const auto& ex : w.experts) {
      moe_ws.push_back(ex.w1_t.data());
      moe_outs.push_back(inter);
      moe_ws.push_back(ex.w3_t.data());
      moe_outs.push_back(inter);
    }
    const std::vector<float> x2_mean = activation_channel_mean(x2.data(), N, d);
    const std::vector<float> moe_w_mean = weight_channel_mean(moe_ws, moe_outs, d, spec.group);
    std::vector<float> fq1, fq3, moe_q(static_cast<size_t>(N * d));
    const SearchResult s3 = search_scales(x2_mean, moe_w_mean, [&](const std::vector<float>& s) {
      std::fill(moe_q.begin(), moe_q.end(), 0.0f);
      for (int e = 0; e < E; ++e) {  // one expert's scratch at a time
        const auto& rows = routing.tokens[size_t(e)];
        const int64_t ne = int64_t(rows.size());
        if (ne == 0) continue;
        check_cancel(opts.cancel);
        const auto& ex = w.experts[size_t(e)];
        fake_quant_scaled(ex.w1_t, d, inter, s, spec, fq1, pool);
        fake_quant_scaled(ex.w3_t, d, inter, s, spec, fq3, pool);
        act.resize(static_cast<size_t>(ne * inter));
        y.resize(static_cast<size_t>(ne * d));
        expert_forward(a[size_t(e)].data(), ne, d, inter, fq1.data(), fq3.data(), ex.w2_t.data(), act.data(), y.data(),
                       pool);
        for (int64_t r = 0; r < ne; ++r) {
          const float wt = routing.weights[size_t(e)][size_t(r)];
          float* dst = moe_q.data() + int64_t(rows[size_t(r)]) * d;
          for (int64_t i = 0; i < d; ++i) dst[i] += wt * y[size_t(r * d + i)];
        }
      }
      return mse(moe_q.data(), moe_fp.data(), moe_q.size());
    }, opts.cancel);
    out->best_alpha[1] = s3.alpha;
    end_phase(2);

    // ---- (4) per expert: w3 → w2 on the expert's routed tokens; loss: w2 output ----
    phase("search-experts", 0.55);
    std::vector<std::vector<float>> s4(static_cast<size_t>(E)), w2_clip_x(static_cast<size_t>(E));
    std::vector<float> fq2, y_q;
    for (int e = 0; e < E; ++e) {
      check_cancel(opts.cancel);
      auto& ex = w.experts[size_t(e)];
      const float* ae = a[size_t(e)].data();
      int64_t ne = int64_t(routing.tokens[size_t(e)].size());
      if (ne == 0) {
        out->warnings.push_back("expert " + std::to_string(e) +
                                " received no calibration tokens; its w2 scale and its clipping use all " +
                                std::to_string(N) + " calibration tokens of the layer instead");
        ae = x2.data();
        ne = N;
      }
      act.resize(static_cast<size_t>(ne * inter));
      y.resize(static_cast<size_t>(ne * d));
      expert_forward(ae, ne, d, inter, ex.w1_t.data(), ex.w3_t.data(), ex.w2_t.data(), act.data(), y.data(), pool);
      const std::vector<float> act_mean = activation_channel_mean(act.data(), ne, inter);
      const std::vector<float> w2_mean = weight_channel_mean({ex.w2_t.data()}, {d}, inter, spec.group);
      y_q.resize(static_cast<size_t>(ne * d));
      const SearchResult se = search_scales(act_mean, w2_mean, [&](const std::vector<float>& s) {
        fake_quant_scaled(ex.w2_t, inter, d, s, spec, fq2, pool);
        sgemm(act.data(), inter, fq2.data(), d, y_q.data(), d, ne, inter, d, false, pool);
        return mse(y_q.data(), y.data(), y_q.size());
      }, opts.cancel);
      out->best_alpha[size_t(2 + e)] = se.alpha;
      s4[size_t(e)] = se.scales;
      // The clip search of w2 sees the scaled inputs act / s.
      const std::vector<int32_t> rows = subsample_rows(ne, opts.clip_tokens);
      w2_clip_x[size_t(e)].resize(rows.size() * size_t(inter));
      gather_rows(act.data(), inter, rows, w2_clip_x[size_t(e)].data());
      divide_channels(w2_clip_x[size_t(e)].data(), int64_t(rows.size()), inter, se.scales.data());
    }
    end_phase(3);

    // ---- apply the scales (fold 1/s into the previous op) ----
    const std::vector<float> s1_eff = fold_into_norm(w.attn_norm, s1.scales, opts.round_norm);
    scale_rows(w.q_t.data(), d, qd, s1_eff.data());
    scale_rows(w.k_t.data(), d, kvd, s1_eff.data());
    scale_rows(w.v_t.data(), d, kvd, s1_eff.data());
    const std::vector<float> s3_eff = fold_into_norm(w.post_norm, s3.scales, opts.round_norm);
    // The router reads the same normed input: its input channels take s too, or the routing would change.
    scale_rows(w.gate_t.data(), d, E, s3_eff.data());
    for (int e = 0; e < E; ++e) {
      auto& ex = w.experts[size_t(e)];
      scale_rows(ex.w1_t.data(), d, inter, s3_eff.data());
      scale_rows(ex.w3_t.data(), d, inter, s3_eff.data());
      divide_cols(ex.w3_t.data(), d, inter, s4[size_t(e)].data());
      scale_rows(ex.w2_t.data(), inter, d, s4[size_t(e)].data());
    }

    // ---- clip search: v, o, and every expert's w1, w3, w2 (not q, k) ----
    phase("clip", 0.75);
    auto clip_on = [&](std::vector<float>& w_t, int64_t in, int64_t outf, const float* x, int64_t rows_total,
                       const float* inv_scale) {
      const std::vector<int32_t> rows = subsample_rows(rows_total, opts.clip_tokens);
      std::vector<float> xs(rows.size() * size_t(in));
      gather_rows(x, in, rows, xs.data());
      if (inv_scale) divide_channels(xs.data(), int64_t(rows.size()), in, inv_scale);
      clip_search_apply(w_t.data(), in, outf, xs.data(), int64_t(rows.size()), spec, pool);
    };
    clip_on(w.v_t, d, kvd, x1.data(), N, s1_eff.data());
    clip_on(w.o_t, qd, d, ctx.data(), N, nullptr);
    for (int e = 0; e < E; ++e) {
      check_cancel(opts.cancel);
      auto& ex = w.experts[size_t(e)];
      const bool routed = !routing.tokens[size_t(e)].empty();
      const float* xe = routed ? a[size_t(e)].data() : x2.data();
      const int64_t ne = routed ? int64_t(routing.tokens[size_t(e)].size()) : N;
      clip_on(ex.w1_t, d, inter, xe, ne, s3_eff.data());
      clip_on(ex.w3_t, d, inter, xe, ne, s3_eff.data());
      const auto& cx = w2_clip_x[size_t(e)];
      clip_search_apply(ex.w2_t.data(), inter, d, cx.data(), int64_t(cx.size() / size_t(inter)), spec, pool);
    }
    end_phase(4);
    std::memcpy(h, h_out.data(), sizeof(float) * size_t(N * d));
  }

  // ---- round to nearest int4 per group ----
  phase("pack", 0.9);
  auto add = [&](const std::string& name, const std::vector<float>& w_t, int64_t in, int64_t outf) {
    out->linears.emplace_back(name, quantize_linear(w_t.data(), in, outf, spec, pool));
  };
  add("self_attn.q_proj", w.q_t, d, qd);
  add("self_attn.k_proj", w.k_t, d, kvd);
  add("self_attn.v_proj", w.v_t, d, kvd);
  add("self_attn.o_proj", w.o_t, qd, d);
  for (int e = 0; e < E; ++e) {
    const std::string p = "block_sparse_moe.experts." + std::to_string(e) + ".";
    add(p + "w1", w.experts[size_t(e)].w1_t, d, inter);
    add(p + "w2", w.experts[size_t(e)].w2_t, inter, d);
    add(p + "w3", w.experts[size_t(e)].w3_t, d, inter);
  }
  out->attn_norm = w.attn_norm;
  out->post_norm = w.post_norm;
  out->gate_t = w.gate_t;
  end_phase(5);
}

}  // namespace mixq::quant
