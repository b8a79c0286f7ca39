// quantize_layer: steps 2–6 of quantize.h for one decoder layer, on f32 weights in memory.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "quant/calib_forward.h"
#include "quant/gptq.h"
#include "quant/quantize.h"
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


const float* qk_norm(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

// The decoder layer in f32 on h [N, d] → h_out; keeps the intermediates the searches need when `keep`.
struct LayerActs {
  std::vector<float> x1, attn, ctx, x2, moe, h_out;  // [N,d], [N,d], [N,qd], [N,d], [N,d], [N,d]
  Routing routing;
  std::vector<std::vector<float>> a;                 // [E][n_e, d] routed inputs per expert
};
void layer_forward(const ModelConfig& cfg, const LayerF32& w, const float* h, int64_t N, bool keep, LayerActs* f,
                   CalibForward& fw) {
  const int64_t d = cfg.hidden_size, inter = cfg.intermediate_size;
  const int E = cfg.num_local_experts;
  f->x1.resize(size_t(N * d));
  f->attn.resize(size_t(N * d));
  fw.rms_norm(h, N, w.attn_norm.data(), f->x1.data());
  fw.attention_block(f->x1.data(), w.q_t.data(), w.k_t.data(), w.v_t.data(), w.o_t.data(), qk_norm(w.q_norm),
                     qk_norm(w.k_norm), f->attn.data(), keep ? &f->ctx : nullptr);
  f->h_out.resize(size_t(N * d));
  for (int64_t i = 0; i < N * d; ++i) f->h_out[size_t(i)] = h[i] + f->attn[size_t(i)];
  f->x2.resize(size_t(N * d));
  fw.rms_norm(f->h_out.data(), N, w.post_norm.data(), f->x2.data());
  f->routing = fw.route(f->x2.data(), N, w.gate_t.data());
  f->a.assign(size_t(E), {});
  f->moe.assign(size_t(N * d), 0.0f);
  std::vector<float> a, act, y;
  for (int e = 0; e < E; ++e) {
    const auto& rows = f->routing.tokens[size_t(e)];
    const int64_t ne = int64_t(rows.size());
    if (ne == 0) continue;
    a.resize(size_t(ne * d));
    gather_rows(f->x2.data(), d, rows, a.data());
    act.resize(size_t(ne * inter));
    y.resize(size_t(ne * d));
    const auto& ex = w.experts[size_t(e)];
    fw.expert(a.data(), ne, ex.w1_t.data(), ex.w3_t.data(), ex.w2_t.data(), act.data(), y.data());
    for (int64_t r = 0; r < ne; ++r) {
      const float wt = f->routing.weights[size_t(e)][size_t(r)];
      float* dst = f->moe.data() + int64_t(rows[size_t(r)]) * d;
      for (int64_t i = 0; i < d; ++i) dst[i] += wt * y[size_t(r * d + i)];
    }
    if (keep) f->a[size_t(e)] = a;
  }
  for (int64_t i = 0; i < N * d; ++i) f->h_out[size_t(i)] += f->moe[size_t(i)];
  if (!keep) {
    f->x1.clear(); f->attn.clear(); f->x2.clear(); f->moe.clear(); f->a.clear();
  }
}

}  // namespace

void quantize_layer(const ModelConfig& cfg, LayerF32& w, float* h, int64_t samples, int64_t seq_len,
                    const LayerQuantOptions& opts, LayerQuantized* out, ThreadPool& pool) {
  const int64_t d = cfg.hidden_size, inter = cfg.intermediate_size;
  const int E = cfg.num_local_experts;
  const int64_t qd = int64_t(cfg.num_attention_heads) * cfg.head_dim;
  const int64_t kvd = int64_t(cfg.num_key_value_heads) * cfg.head_dim;
  const int64_t N = samples * seq_len;
  const QuantSpec& spec = opts.spec;
  // The calibration forward runs on the CPU backend's ops (one pool per thread count, shared with the engine).
  std::unique_ptr<Backend> backend = make_backend(Device{}, BackendOptions{pool.size()});
  CalibForward fw(cfg, samples, seq_len, *backend);

  out->best_alpha.assign(static_cast<size_t>(3 + E), -1.0f);
  out->phase_seconds.assign(7, 0.0);
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
  const bool gptq = opts.awq && opts.rounding == Rounding::Gptq;
  // Final codes of one Linear: round-to-nearest, or error feedback on its calibration inputs x [n, in] / div.
  auto finish = [&](const std::vector<float>& w_t, int64_t in, int64_t outf, const GptqFactor* factor) {
    if (gptq && factor) return gptq_quantize_linear(w_t.data(), in, outf, *factor, spec, pool);
    return quantize_linear(w_t.data(), in, outf, spec, pool);
  };
  auto factor_of = [&](const float* x, int64_t n, int64_t in, const float* div) {
    return gptq_factor(gram_matrix(x, n, in, div, pool), in, pool, opts.gptq_damp, /*act_order=*/true);
  };
  std::vector<QuantizedLinear> w2q(static_cast<size_t>(E));  // filled in phase (4) when awq

  LayerActs f;  // the float layer's activations (AWQ)
  std::vector<float> s1_eff, s_v, s_o, s3_eff;
  if (opts.awq) {
    if (!h || N <= 0) throw Error("AWQ needs calibration activations (samples × seq_len > 0)");
    // ---- float forward: statistics, block outputs, and (propagate_quantized = false) the next layer's input ----
    phase("forward", 0.0);
    layer_forward(cfg, w, h, N, /*keep=*/true, &f, fw);
    const Routing& routing = f.routing;
    const auto& a = f.a;
    std::vector<float> act, y;
    end_phase(0);

    // ---- (1) input_layernorm → q, k, v; loss: self-attention output ----
    phase("search-attn", 0.1);
    std::vector<float> fq_q, fq_k, fq_v, attn_q(static_cast<size_t>(N * d));
    const std::vector<float> x1_mean = activation_channel_mean(f.x1.data(), N, d);
    const std::vector<float> attn_w_mean =
        weight_channel_mean({w.q_t.data(), w.k_t.data(), w.v_t.data()}, {qd, kvd, kvd}, d, spec.group);
    const SearchResult s1 = search_scales(x1_mean, attn_w_mean, [&](const std::vector<float>& s) {
      fake_quant_scaled(w.q_t, d, qd, s, spec, fq_q, pool);
      fake_quant_scaled(w.k_t, d, kvd, s, spec, fq_k, pool);
      fake_quant_scaled(w.v_t, d, kvd, s, spec, fq_v, pool);
      fw.attention_block(f.x1.data(), fq_q.data(), fq_k.data(), fq_v.data(), w.o_t.data(), qk_norm(w.q_norm),
                         qk_norm(w.k_norm), attn_q.data(), nullptr);
      return mse(attn_q.data(), f.attn.data(), attn_q.size());
    }, opts.cancel);
    out->best_alpha[0] = s1.alpha;

    // ---- (2) v → o; loss: o_proj output. o input channel c = head·hd + j reads v channel kv(c) =
    //      (head / rep)·hd + j (rep = heads / kv_heads), so those channels share the scale s_v[kv(c)] ----
    {
      const int64_t hd = cfg.head_dim, rep = cfg.num_attention_heads / cfg.num_key_value_heads;
      auto kv_of = [&](int64_t c) { return ((c / hd) / rep) * hd + c % hd; };
      auto tie = [&](const std::vector<float>& v) {  // [qd] → [kvd], mean over the heads sharing a kv channel
        std::vector<float> t(static_cast<size_t>(kvd), 0.0f);
        for (int64_t c = 0; c < qd; ++c) t[size_t(kv_of(c))] += v[size_t(c)] / float(rep);
        return t;
      };
      auto expand = [&](const std::vector<float>& sv) {
        std::vector<float> so(static_cast<size_t>(qd));
        for (int64_t c = 0; c < qd; ++c) so[size_t(c)] = sv[size_t(kv_of(c))];
        return so;
      };
      std::vector<float> fq_o, y_o(static_cast<size_t>(N * d));
      const SearchResult s2 = search_scales(
          tie(activation_channel_mean(f.ctx.data(), N, qd)), tie(weight_channel_mean({w.o_t.data()}, {d}, qd, spec.group)),
          [&](const std::vector<float>& sv) {
            fake_quant_scaled(w.o_t, qd, d, expand(sv), spec, fq_o, pool);
            fw.matmul(f.ctx.data(), N, qd, fq_o.data(), d, y_o.data());
            return mse(y_o.data(), f.attn.data(), y_o.size());
          },
          opts.cancel);
      out->best_alpha[size_t(2 + E)] = s2.alpha;
      s_v = s2.scales;
      s_o = expand(s_v);
    }
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
    const std::vector<float> x2_mean = activation_channel_mean(f.x2.data(), N, d);
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
        fw.expert(a[size_t(e)].data(), ne, fq1.data(), fq3.data(), ex.w2_t.data(), act.data(), y.data());
        for (int64_t r = 0; r < ne; ++r) {
          const float wt = routing.weights[size_t(e)][size_t(r)];
          float* dst = moe_q.data() + int64_t(rows[size_t(r)]) * d;
          for (int64_t i = 0; i < d; ++i) dst[i] += wt * y[size_t(r * d + i)];
        }
      }
      return mse(moe_q.data(), f.moe.data(), moe_q.size());
    }, opts.cancel);
    out->best_alpha[1] = s3.alpha;
    end_phase(2);

    // ---- (4) per expert: w3 → w2 on the expert's routed tokens; loss: w2 output. w2 depends on no other
    //      group, so it is scaled, clipped and rounded here, while its inputs are at hand ----
    phase("search-experts", 0.55);
    std::vector<std::vector<float>> s4(static_cast<size_t>(E));
    std::vector<float> fq2, y_q, clip_x;
    for (int e = 0; e < E; ++e) {
      check_cancel(opts.cancel);
      auto& ex = w.experts[size_t(e)];
      const float* ae = a[size_t(e)].data();
      int64_t ne = int64_t(routing.tokens[size_t(e)].size());
      if (ne == 0) {
        ++out->experts_without_tokens;
        out->warnings.push_back("expert " + std::to_string(e) +
                                " received no calibration tokens; its w2 scale, its clipping and its rounding use all " +
                                std::to_string(N) + " calibration tokens of the layer instead");
        ae = f.x2.data();
        ne = N;
      }
      act.resize(static_cast<size_t>(ne * inter));
      y.resize(static_cast<size_t>(ne * d));
      fw.expert(ae, ne, ex.w1_t.data(), ex.w3_t.data(), ex.w2_t.data(), act.data(), y.data());
      const std::vector<float> act_mean = activation_channel_mean(act.data(), ne, inter);
      const std::vector<float> w2_mean = weight_channel_mean({ex.w2_t.data()}, {d}, inter, spec.group);
      y_q.resize(static_cast<size_t>(ne * d));
      const SearchResult se = search_scales(act_mean, w2_mean, [&](const std::vector<float>& s) {
        fake_quant_scaled(ex.w2_t, inter, d, s, spec, fq2, pool);
        fw.matmul(act.data(), ne, inter, fq2.data(), d, y_q.data());
        return mse(y_q.data(), y.data(), y_q.size());
      }, opts.cancel);
      out->best_alpha[size_t(2 + e)] = se.alpha;
      s4[size_t(e)] = se.scales;
      // w2 ← w2·s (rows), clip on the scaled inputs act / s, then its codes.
      scale_rows(ex.w2_t.data(), inter, d, se.scales.data());
      const std::vector<int32_t> rows = subsample_rows(ne, opts.clip_tokens);
      clip_x.resize(rows.size() * size_t(inter));
      gather_rows(act.data(), inter, rows, clip_x.data());
      divide_channels(clip_x.data(), int64_t(rows.size()), inter, se.scales.data());
      clip_search_apply(ex.w2_t.data(), inter, d, clip_x.data(), int64_t(rows.size()), spec, pool);
      if (gptq) {
        const GptqFactor f2 = factor_of(act.data(), ne, inter, se.scales.data());
        w2q[size_t(e)] = finish(ex.w2_t, inter, d, &f2);
      } else {
        w2q[size_t(e)] = finish(ex.w2_t, inter, d, nullptr);
      }
    }
    if (out->experts_without_tokens > 0) {
      out->warnings.push_back(std::to_string(out->experts_without_tokens) + " of " + std::to_string(E) +
                              " experts received no calibration tokens and used the fallback (all the layer's tokens)");
    }
    end_phase(3);

    // ---- apply the scales (fold 1/s into the previous op) ----
    s1_eff = fold_into_norm(w.attn_norm, s1.scales, opts.round_norm);
    scale_rows(w.q_t.data(), d, qd, s1_eff.data());
    scale_rows(w.k_t.data(), d, kvd, s1_eff.data());
    scale_rows(w.v_t.data(), d, kvd, s1_eff.data());
    divide_cols(w.v_t.data(), d, kvd, s_v.data());
    scale_rows(w.o_t.data(), qd, d, s_o.data());
    s3_eff = fold_into_norm(w.post_norm, s3.scales, opts.round_norm);
    // The router reads the same normed input: its input channels take s too, or the routing would change.
    scale_rows(w.gate_t.data(), d, E, s3_eff.data());
    for (int e = 0; e < E; ++e) {
      auto& ex = w.experts[size_t(e)];
      scale_rows(ex.w1_t.data(), d, inter, s3_eff.data());
      scale_rows(ex.w3_t.data(), d, inter, s3_eff.data());
      divide_cols(ex.w3_t.data(), d, inter, s4[size_t(e)].data());
    }

    // ---- clip search: v, o, and every expert's w1, w3 (w2 done above; not q, k) ----
    phase("clip", 0.75);
    auto clip_on = [&](std::vector<float>& w_t, int64_t in, int64_t outf, const float* x, int64_t rows_total,
                       const float* inv_scale) {
      const std::vector<int32_t> rows = subsample_rows(rows_total, opts.clip_tokens);
      std::vector<float> xs(rows.size() * size_t(in));
      gather_rows(x, in, rows, xs.data());
      if (inv_scale) divide_channels(xs.data(), int64_t(rows.size()), in, inv_scale);
      clip_search_apply(w_t.data(), in, outf, xs.data(), int64_t(rows.size()), spec, pool);
    };
    clip_on(w.v_t, d, kvd, f.x1.data(), N, s1_eff.data());
    clip_on(w.o_t, qd, d, f.ctx.data(), N, s_o.data());
    for (int e = 0; e < E; ++e) {
      check_cancel(opts.cancel);
      auto& ex = w.experts[size_t(e)];
      const bool routed = !routing.tokens[size_t(e)].empty();
      const float* xe = routed ? a[size_t(e)].data() : f.x2.data();
      const int64_t ne = routed ? int64_t(routing.tokens[size_t(e)].size()) : N;
      clip_on(ex.w1_t, d, inter, xe, ne, s3_eff.data());
      clip_on(ex.w3_t, d, inter, xe, ne, s3_eff.data());
    }
    end_phase(4);
  }

  // ---- int4 codes per group (round to nearest, or error feedback on the calibration inputs) ----
  phase("pack", 0.85);
  auto add = [&](const std::string& name, QuantizedLinear ql) { out->linears.emplace_back(name, std::move(ql)); };
  {
    GptqFactor g_qkv, g_o;  // q, k, v read the same input: one factor
    if (gptq) {
      g_qkv = factor_of(f.x1.data(), N, d, s1_eff.data());
      g_o = factor_of(f.ctx.data(), N, qd, s_o.data());
    }
    add("self_attn.q_proj", finish(w.q_t, d, qd, gptq ? &g_qkv : nullptr));
    add("self_attn.k_proj", finish(w.k_t, d, kvd, gptq ? &g_qkv : nullptr));
    add("self_attn.v_proj", finish(w.v_t, d, kvd, gptq ? &g_qkv : nullptr));
    add("self_attn.o_proj", finish(w.o_t, qd, d, gptq ? &g_o : nullptr));
  }
  const WeightNames names = cfg.names();
  const std::string experts_prefix = names.moe + ".experts.";
  for (int e = 0; e < E; ++e) {
    check_cancel(opts.cancel);
    const std::string p = experts_prefix + std::to_string(e) + ".";
    auto& ex = w.experts[size_t(e)];
    GptqFactor g13;  // w1 and w3 read the same input
    if (gptq) {
      const bool routed = !f.routing.tokens[size_t(e)].empty();
      g13 = factor_of(routed ? f.a[size_t(e)].data() : f.x2.data(),
                      routed ? int64_t(f.routing.tokens[size_t(e)].size()) : N, d, s3_eff.data());
    }
    add(p + names.w1, finish(ex.w1_t, d, inter, gptq ? &g13 : nullptr));
    add(p + names.w2, opts.awq ? std::move(w2q[size_t(e)]) : finish(ex.w2_t, inter, d, nullptr));
    add(p + names.w3, finish(ex.w3_t, d, inter, gptq ? &g13 : nullptr));
  }
  out->attn_norm = w.attn_norm;
  out->post_norm = w.post_norm;
  out->gate_t = w.gate_t;
  end_phase(5);

  // ---- the next layer's calibration input ----
  if (opts.awq) {
    if (opts.propagate_quantized) {
      phase("propagate", 0.95);
      f = LayerActs();  // free the float activations first
      // The layer as it will run: folded norms, scaled router, dequantized codes.
      for (const auto& [name, ql] : out->linears) {
        std::vector<float>* dst = nullptr;
        if (name == "self_attn.q_proj") dst = &w.q_t;
        else if (name == "self_attn.k_proj") dst = &w.k_t;
        else if (name == "self_attn.v_proj") dst = &w.v_t;
        else if (name == "self_attn.o_proj") dst = &w.o_t;
        else {
          const size_t dot = name.rfind('.');
          const int e = std::stoi(name.substr(experts_prefix.size()));
          const std::string which = name.substr(dot + 1);
          auto& ex = w.experts[size_t(e)];
          dst = which == names.w1 ? &ex.w1_t : which == names.w2 ? &ex.w2_t : &ex.w3_t;
        }
        ql.dequantize(dst->data());
      }
      LayerActs q;
      layer_forward(cfg, w, h, N, /*keep=*/false, &q, fw);
      std::memcpy(h, q.h_out.data(), sizeof(float) * size_t(N * d));
    } else {
      std::memcpy(h, f.h_out.data(), sizeof(float) * size_t(N * d));
    }
    end_phase(6);
  }
}

}  // namespace mixq::quant
