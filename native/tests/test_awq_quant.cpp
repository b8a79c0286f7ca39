// The quantizer's math and its calibration forward:
//  - quantize_linear (RTN int4, zero point and symmetric) equals a plain per-group loop written here;
//  - clip_search_apply (Gram-matrix form) picks what a brute-force search of the output error picks;
//  - duo scales are normalised so that max·min = 1;
//  - the f32 calibration layer forward reproduces transformers' hidden states (reference.safetensors) for
//    layers 0..2 of every reference prompt (rel err ≤ 1e-4), so the AWQ statistics are the model's own;
//  - gptq_quantize_linear (rounding with error feedback) keeps RTN's scales and zeros, equals RTN when the
//    Hessian is the identity, and picks the codes a plain Optimal-Brain-Quantization loop (explicit inverse,
//    rank-1 removal after every row, double precision) picks, with a lower output error than RTN;
//  - RTN g128 of the fixture: perplexity within 0.5% of valid_ppl_rtn_int4_g128 (an independent check of
//    quantize → pack → load → int4 kernels).
#include <cmath>
#include <cstring>
#include <random>

#include "engine.h"
#include "json.h"
#include "model.h"
#include "perplexity.h"
#include "quant/awq_math.h"
#include "quant/gptq.h"
#include "quant/quantize.h"
#include "safetensors.h"
#include "tensor.h"
#include "test_util.h"
#include "thread_pool.h"

using namespace mixq;
using namespace mixq::quant;
using namespace mixq_test;

namespace {

float rne(float x) { return std::nearbyint(x); }

// The plain loop: per (group, column) min/max → fp16 scale → zero → codes.
void brute_quantize(const std::vector<float>& w_t, int64_t in, int64_t out, int G, bool zp, std::vector<uint8_t>& q,
                    std::vector<uint8_t>& z, std::vector<uint16_t>& s) {
  q.assign(size_t(in * out), 0);
  z.assign(size_t(in / G * out), 0);
  s.assign(z.size(), 0);
  for (int64_t g = 0; g < in / G; ++g)
    for (int64_t o = 0; o < out; ++o) {
      float mn = INFINITY, mx = -INFINITY;
      for (int64_t i = g * G; i < (g + 1) * G; ++i) {
        mn = std::min(mn, w_t[size_t(i * out + o)]);
        mx = std::max(mx, w_t[size_t(i * out + o)]);
      }
      const float raw = zp ? std::max(mx - mn, 1e-5f) / 15.0f : std::max(std::max(-mn, mx), 1e-5f) / 7.0f;
      const uint16_t s16 = f32_to_f16(raw);
      const float sc = f16_to_f32(s16);
      const float zero = zp ? std::min(std::max(-rne(mn / sc), 0.0f), 15.0f) : 8.0f;
      s[size_t(g * out + o)] = s16;
      z[size_t(g * out + o)] = uint8_t(zero);
      for (int64_t i = g * G; i < (g + 1) * G; ++i) {
        const float v = w_t[size_t(i * out + o)] / sc;
        const float code = zp ? std::min(std::max(rne(v) + zero, 0.0f), 15.0f) : std::min(std::max(rne(v), -8.0f), 7.0f) + 8.0f;
        q[size_t(i * out + o)] = uint8_t(code);
      }
    }
}

LayerF32 layer_from_engine(const Model& model, int l) {
  const LayerWeights& L = model.weights().layers[size_t(l)];
  auto t = [](const Linear& lin) {
    std::vector<float> w_t(static_cast<size_t>(lin.in_features * lin.out_features)), row(static_cast<size_t>(lin.in_features));
    for (int64_t o = 0; o < lin.out_features; ++o) {
      lin.weight_row(o, row.data());
      for (int64_t i = 0; i < lin.in_features; ++i) w_t[size_t(i * lin.out_features + o)] = row[size_t(i)];
    }
    return w_t;
  };
  LayerF32 w;
  w.attn_norm = host_floats(model, L.attn_norm);
  w.post_norm = host_floats(model, L.post_attn_norm);
  w.q_t = t(*L.q);
  w.k_t = t(*L.k);
  w.v_t = t(*L.v);
  w.o_t = t(*L.o);
  w.gate_t = t(*L.gate);
  for (const ExpertWeights& e : L.experts) w.experts.push_back({t(*e.w1), t(*e.w3), t(*e.w2)});
  return w;
}

}  // namespace

int main() {
  ThreadPool pool(2);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 0.05f);

  // ---- RTN codes vs the plain loop ----
  for (bool zp : {true, false})
    for (int G : {32, 64, 128}) {
      const int64_t in = 256, out = 136;
      std::vector<float> w_t(static_cast<size_t>(in * out));
      for (float& v : w_t) v = nd(rng);
      w_t[5] = 0.4f;  // an outlier
      QuantSpec spec{G, zp};
      const QuantizedLinear ql = quantize_linear(w_t.data(), in, out, spec, pool);
      std::vector<uint8_t> q, z;
      std::vector<uint16_t> s;
      brute_quantize(w_t, in, out, G, zp, q, z, s);
      check(ql.q == q && ql.zeros == z && ql.scales == s,
            std::string(zp ? "zero point" : "symmetric") + " g" + std::to_string(G) + ": codes, zeros, fp16 scales equal the plain loop");
      std::vector<float> deq(w_t.size()), fake = w_t;
      ql.dequantize(deq.data());
      fake_quantize(fake.data(), in, out, spec, pool);
      double maxerr = 0;
      for (size_t i = 0; i < deq.size(); ++i) maxerr = std::max(maxerr, double(std::fabs(deq[i] - w_t[i])));
      check(std::memcmp(deq.data(), fake.data(), deq.size() * 4) == 0 && maxerr < 0.05,
            "fake_quantize == dequantize(quantize) bit for bit; max |w − ŵ| " + fmt(maxerr));
    }

  // ---- clip search vs brute force on the output error ----
  {
    const int64_t in = 128, out = 24, n = 96;
    const int G = 64;
    std::vector<float> w_t(static_cast<size_t>(in * out)), x(static_cast<size_t>(n * in));
    for (float& v : w_t) v = nd(rng);
    for (int64_t o = 0; o < out; o += 3) w_t[size_t((o % in) * out + o)] = 0.5f;  // outliers worth clipping
    for (float& v : x) v = nd(rng) * 20.0f;
    std::vector<float> mine = w_t;
    clip_search_apply(mine.data(), in, out, x.data(), n, QuantSpec{G, true}, pool);
    std::vector<float> brute = w_t;
    for (int64_t g = 0; g < in / G; ++g)
      for (int64_t o = 0; o < out; ++o) {
        float amax = 0;
        for (int64_t i = g * G; i < (g + 1) * G; ++i) amax = std::max(amax, std::fabs(w_t[size_t(i * out + o)]));
        double best = INFINITY;
        float best_c = INFINITY;
        for (int step = 0; step < 10; ++step) {
          const float c = amax * (1.0f - float(step) / 20.0f);
          QuantSpec one{G, true};
          // One column, replicated 8 times (out must be a multiple of 8); column 0 is the candidate.
          std::vector<float> blk(static_cast<size_t>(G * 8));
          for (int64_t i = 0; i < G; ++i)
            for (int k = 0; k < 8; ++k) blk[size_t(i * 8 + k)] = std::clamp(w_t[size_t((g * G + i) * out + o)], -c, c);
          fake_quantize(blk.data(), G, 8, one, pool);
          double err = 0;
          for (int64_t t = 0; t < n; ++t) {
            double d = 0;
            for (int64_t i = 0; i < G; ++i)
              d += double(x[size_t(t * in + g * G + i)]) * (double(blk[size_t(i * 8)]) - double(w_t[size_t((g * G + i) * out + o)]));
            err += d * d;
          }
          if (err / double(n) < best * (1 - 1e-6)) {
            best = err / double(n);
            best_c = step == 0 ? INFINITY : c;
          }
        }
        for (int64_t i = g * G; i < (g + 1) * G; ++i) brute[size_t(i * out + o)] = std::clamp(w_t[size_t(i * out + o)], -best_c, best_c);
      }
    size_t same = 0, clipped = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      same += mine[i] == brute[i];
      clipped += mine[i] != w_t[i];
    }
    check(same == mine.size() && clipped > 0, "clip search (Gram form) = brute-force output-error search; " +
                                                  std::to_string(clipped) + " weights clipped");
  }

  // ---- duo scales ----
  {
    std::vector<float> xm(64), wm(64);
    for (int i = 0; i < 64; ++i) {
      xm[size_t(i)] = 0.01f + 0.1f * float(i);
      wm[size_t(i)] = 0.2f + 0.01f * float(i % 7);
    }
    const std::vector<float> s = duo_scales(xm, wm, 0.5f);
    const float mx = *std::max_element(s.begin(), s.end()), mn = *std::min_element(s.begin(), s.end());
    check(std::fabs(mx * mn - 1.0f) < 1e-5f, "duo scales normalised: max·min = " + fmt(mx * mn));
    const std::vector<float> s0 = duo_scales(xm, wm, 0.0f);
    check(std::fabs(s0[0] / s0[1] - (wm[1] + 1e-4f) / (wm[0] + 1e-4f)) < 1e-5f, "α = 0: s ∝ 1 / (w_mean + 1e-4)");
  }

  require_fixtures();
  // ---- the calibration forward reproduces transformers' hidden states ----
  {
    EngineOptions eo;
    eo.threads = 2;
    auto model = Model::load(tiny_model_dir(), eo);
    const ModelConfig& cfg = model->config();
    const std::string ref_dir = fixtures_dir() + "/mixq-tiny-code/reference";
    const JsonValue ref = parse_json_file(ref_dir + "/reference.json");
    const SafetensorsFile tensors(ref_dir + "/reference.safetensors");
    std::vector<LayerF32> layers;
    for (int l = 0; l < 3; ++l) layers.push_back(layer_from_engine(*model, l));
    double worst = 0;
    int compared = 0;
    for (const JsonValue& p : ref.find("prompts")->as_array()) {
      const std::string name = p.find("name")->as_string();
      std::vector<int32_t> ids;
      for (const JsonValue& v : p.find("input_ids")->as_array()) ids.push_back(int32_t(v.as_int()));
      const int64_t n = int64_t(ids.size());
      std::vector<float> h(static_cast<size_t>(n * cfg.hidden_size));
      for (int64_t t = 0; t < n; ++t) model->weights().embed_row(ids[size_t(t)], h.data() + t * cfg.hidden_size);
      for (int l = 0; l < 3; ++l) {
        LayerF32 w = layers[size_t(l)];  // quantize_layer scales/clips its copy; h becomes the float output
        LayerQuantOptions lo;
        lo.spec.group = 128;
        lo.propagate_quantized = false;  // h becomes the float layer's output (the default passes on the quantized one)
        LayerQuantized lq;
        quantize_layer(cfg, w, h.data(), 1, n, lo, &lq, pool);
        const TensorView* r = tensors.find(name + ".hidden." + std::to_string(l + 1));
        if (!r) continue;
        const double e = rel_err(h.data(), static_cast<const float*>(r->data), h.size());
        worst = std::max(worst, e);
        ++compared;
      }
    }
    check(compared >= 3 && worst <= 1e-4, "calibration forward vs transformers hidden states after layers 0..2 (" +
                                              std::to_string(compared) + " comparisons): worst rel err " + fmt(worst));
  }

  // ---- rounding with error feedback (GPTQ) ----
  {
    // in = 320: three row blocks of gptq.cpp (128, 128, 64), so the lazy GEMM update between blocks is covered
    const int64_t in = 320, out = 16, n = 600;
    const int G = 32;
    std::vector<float> w_t(static_cast<size_t>(in * out)), x(static_cast<size_t>(n * in));
    for (float& v : w_t) v = nd(rng) * 0.05f;
    // correlated inputs: x = z·M with a random mixing matrix, a few loud channels
    std::vector<float> mix(static_cast<size_t>(in * in));
    for (float& v : mix) v = nd(rng) * 0.3f;
    for (int64_t i = 0; i < in; ++i) mix[size_t(i * in + i)] += 1.0f;
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> zt(static_cast<size_t>(in));
      for (float& v : zt) v = nd(rng);
      for (int64_t j = 0; j < in; ++j) {
        float acc = 0;
        for (int64_t i = 0; i < in; ++i) acc += zt[size_t(i)] * mix[size_t(i * in + j)];
        x[size_t(t * in + j)] = acc * (j % 17 == 0 ? 8.0f : 1.0f);
      }
    }
    const QuantSpec spec{G, true};
    const std::vector<float> gram = gram_matrix(x.data(), n, in, nullptr, pool);
    // the Gram against a plain double loop
    double gerr = 0;
    for (int64_t a = 0; a < in; ++a)
      for (int64_t b = 0; b < in; ++b) {
        double acc = 0;
        for (int64_t t = 0; t < n; ++t) acc += double(x[size_t(t * in + a)]) * double(x[size_t(t * in + b)]);
        acc /= double(n);
        gerr = std::max(gerr, std::fabs(acc - double(gram[size_t(a * in + b)])) / (std::fabs(acc) + 1.0));
      }
    check(gerr < 1e-5, "gram_matrix = Σ x xᵀ / n (max rel err " + fmt(gerr) + ")");

    const QuantizedLinear rtn = quantize_linear(w_t.data(), in, out, spec, pool);
    // oracle: OBQ with an explicit inverse in double, rows in a given order; after each row its error goes to the
    // rows still to come and the row leaves the inverse (rank-1 Schur update)
    auto obq = [&](const std::vector<int64_t>& order, const QuantizedLinear& rtn_ref) {
      std::vector<double> H(static_cast<size_t>(in * in));
      double md = 0;
      for (int64_t i = 0; i < in; ++i) md += gram[size_t(i * in + i)];
      md /= double(in);
      for (int64_t i = 0; i < in * in; ++i) H[size_t(i)] = gram[size_t(i)];
      for (int64_t i = 0; i < in; ++i) H[size_t(i * in + i)] += 0.01 * md;
      std::vector<double> Hi(static_cast<size_t>(in * in), 0.0);  // Gauss-Jordan inverse
      std::vector<double> A = H;
      for (int64_t i = 0; i < in; ++i) Hi[size_t(i * in + i)] = 1.0;
      for (int64_t c = 0; c < in; ++c) {
        const double piv = A[size_t(c * in + c)];
        for (int64_t k = 0; k < in; ++k) {
          A[size_t(c * in + k)] /= piv;
          Hi[size_t(c * in + k)] /= piv;
        }
        for (int64_t r = 0; r < in; ++r) {
          if (r == c) continue;
          const double f = A[size_t(r * in + c)];
          for (int64_t k = 0; k < in; ++k) {
            A[size_t(r * in + k)] -= f * A[size_t(c * in + k)];
            Hi[size_t(r * in + k)] -= f * Hi[size_t(c * in + k)];
          }
        }
      }
      std::vector<double> W(w_t.begin(), w_t.end());
      std::vector<uint8_t> oq(static_cast<size_t>(in * out));
      for (size_t a = 0; a < order.size(); ++a) {
        const int64_t i = order[a], g = i / G;
        std::vector<double> e(static_cast<size_t>(out));
        for (int64_t o = 0; o < out; ++o) {
          const double sc = f16_to_f32(rtn_ref.scales[size_t(g * out + o)]), zc = rtn_ref.zeros[size_t(g * out + o)];
          const double q = std::min(std::max(std::nearbyint(W[size_t(i * out + o)] / sc) + zc, 0.0), 15.0);
          oq[size_t(i * out + o)] = uint8_t(q);
          e[size_t(o)] = (W[size_t(i * out + o)] - (q - zc) * sc) / Hi[size_t(i * in + i)];
        }
        for (size_t b = a + 1; b < order.size(); ++b) {
          const int64_t j = order[b];
          for (int64_t o = 0; o < out; ++o) W[size_t(j * out + o)] -= Hi[size_t(i * in + j)] * e[size_t(o)];
        }
        const double hii = Hi[size_t(i * in + i)];
        std::vector<double> col(static_cast<size_t>(in));
        for (int64_t j = 0; j < in; ++j) col[size_t(j)] = Hi[size_t(j * in + i)];
        for (size_t b = a + 1; b < order.size(); ++b)
          for (size_t c = a + 1; c < order.size(); ++c) {
            const int64_t j = order[b], k = order[c];
            Hi[size_t(j * in + k)] -= col[size_t(j)] * col[size_t(k)] / hii;
          }
      }
      return oq;
    };
    // output error ‖X (Ŵ − W)‖² / n of a code set
    auto out_err = [&](const QuantizedLinear& ql) {
      std::vector<float> deq(static_cast<size_t>(in * out));
      ql.dequantize(deq.data());
      double acc = 0;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t o = 0; o < out; ++o) {
          double dsum = 0;
          for (int64_t i = 0; i < in; ++i)
            dsum += double(x[size_t(t * in + i)]) * (double(deq[size_t(i * out + o)]) - double(w_t[size_t(i * out + o)]));
          acc += dsum * dsum;
        }
      return acc / double(n);
    };
    const double e_rtn = out_err(rtn);
    const std::vector<int64_t> act = act_order_permutation(gram, in);
    bool sorted = true, moved = false;
    for (int64_t a = 0; a + 1 < in; ++a) {
      sorted = sorted && gram[size_t(act[size_t(a)] * in + act[size_t(a)])] >= gram[size_t(act[size_t(a + 1)] * in + act[size_t(a + 1)])];
      moved = moved || act[size_t(a)] != a;
    }
    check(sorted && moved, "act order: rows by decreasing H_ii (and not the identity here)");
    for (bool act_order : {false, true}) {
      const char* tag = act_order ? "act order" : "natural order";
      const QuantizedLinear gq = gptq_quantize_linear(w_t.data(), in, out, gram, spec, pool, 0.01, act_order);
      check(gq.scales == rtn.scales && gq.zeros == rtn.zeros,
            std::string("GPTQ (") + tag + ") keeps round-to-nearest's scales and zeros");
      std::vector<int64_t> order(static_cast<size_t>(in));
      for (int64_t i = 0; i < in; ++i) order[size_t(i)] = i;
      const std::vector<uint8_t> oq = obq(act_order ? act : order, rtn);
      size_t agree = 0;
      for (size_t i = 0; i < oq.size(); ++i) agree += oq[i] == gq.q[i];
      check(double(agree) >= 0.995 * double(oq.size()),
            std::string("GPTQ (") + tag + ") codes = the OBQ oracle's: " + std::to_string(agree) + " of " +
                std::to_string(oq.size()) + " (float vs double may flip a rounding tie)");
      const double e_gptq = out_err(gq);
      check(e_gptq < 0.95 * e_rtn, std::string("GPTQ (") + tag + ") output error " + fmt(e_gptq) +
                                       " < 0.95 × RTN's " + fmt(e_rtn));
    }
    // identity Hessian: no feedback, exactly RTN
    std::vector<float> eye(static_cast<size_t>(in * in), 0.0f);
    for (int64_t i = 0; i < in; ++i) eye[size_t(i * in + i)] = 1.0f;
    const QuantizedLinear gi = gptq_quantize_linear(w_t.data(), in, out, eye, spec, pool, 0.01);
    check(gi.q == rtn.q, "GPTQ with H = I gives the round-to-nearest codes");
  }

  // ---- the factor itself: Uᵀ U (H + λI) = I for a size that is not a multiple of the 128-block ----
  {
    const int64_t in = 300, n = 500;
    std::vector<float> x(static_cast<size_t>(n * in));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < in; ++i) x[size_t(t * in + i)] = nd(rng) * (i % 7 == 0 ? 5.0f : 1.0f) + (i % 3 == 0 ? x[size_t(t * in)] : 0.0f);
    const std::vector<float> gram = gram_matrix(x.data(), n, in, nullptr, pool);
    const double damp = 0.1;
    const std::vector<float> u = inverse_hessian_factor(gram, in, damp, pool);
    double md = 0;
    for (int64_t i = 0; i < in; ++i) md += gram[size_t(i * in + i)];
    md /= double(in);
    bool upper = true;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < i; ++j) upper = upper && u[size_t(i * in + j)] == 0.0f;
    // P = U (H + λI), then Q = Uᵀ P
    std::vector<double> P(static_cast<size_t>(in * in), 0.0);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t k = i; k < in; ++k) {
        const double uik = u[size_t(i * in + k)];
        for (int64_t j = 0; j < in; ++j)
          P[size_t(i * in + j)] += uik * (double(gram[size_t(k * in + j)]) + (k == j ? damp * md : 0.0));
      }
    double worst = 0;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < in; ++j) {
        double q = 0;
        for (int64_t k = 0; k <= i; ++k) q += double(u[size_t(k * in + i)]) * P[size_t(k * in + j)];
        worst = std::max(worst, std::fabs(q - (i == j ? 1.0 : 0.0)));
      }
    check(upper && worst < 2e-3, "inverse_hessian_factor: U upper, Uᵀ U (H + λI) = I within " + fmt(worst) +
                                     " (in = 300: two full 128-blocks and a partial one, f32)");
  }

  // ---- RTN g128 perplexity vs the published figure ----
  {
    const std::string tmp = make_temp_dir("awq_quant");
    QuantizeOptions o;
    o.source_dir = tiny_model_dir();
    o.output_dir = tmp + "/rtn-g128";
    o.method = "rtn";
    o.group_size = 128;
    quantize_model(o);
    const JsonValue figures = parse_json_file(fixtures_dir() + "/reference-figures.json");
    const double want = figures.find("mixq-tiny-code")->find("valid_ppl_rtn_int4_g128")->as_number();
    const SafetensorsFile valid(fixtures_dir() + "/valid_ids.safetensors");
    const TensorView* ids = valid.find("ids");
    EngineOptions eo;
    auto model = Model::load(o.output_dir, eo);
    Context ctx(model, 512);
    const PerplexityResult r =
        perplexity(ctx, static_cast<const int32_t*>(ids->data), size_t(ids->numel()), 120, 512, nullptr);
    const double rel = std::fabs(r.ppl - want) / want;
    check(rel <= 5e-3, "RTN int4 g128 ppl " + fmt(r.ppl) + " within 0.5% of valid_ppl_rtn_int4_g128 " + fmt(want) +
                           " (rel " + fmt(rel) + ", " + fmt(r.ms / 1e3) + " s on the int4 kernels)");
    remove_tree(tmp);
  }
  return finish();
}
