#include "quant/calib_forward.h"

#include <cstring>

#include "ops/rope.h"

namespace mixq::quant {

CalibForward::CalibForward(const ModelConfig& cfg, int64_t samples, int64_t seq_len, Backend& backend)
    : cfg_(cfg), samples_(samples), seq_len_(seq_len), be_(backend) {
  std::vector<int32_t> pos(static_cast<size_t>(seq_len));
  for (int64_t p = 0; p < seq_len; ++p) pos[size_t(p)] = int32_t(p);
  positions_ = be_.empty(DType::I32, {seq_len}, "positions");
  be_.from_host(pos.data(), pos.size() * sizeof(int32_t), positions_);
  const std::vector<float> inv = rope_inv_freq(cfg.rope_theta, cfg.head_dim);
  inv_freq_ = be_.empty(DType::F32, {int64_t(inv.size())}, "rope inv_freq");
  be_.from_host(inv.data(), inv.size() * sizeof(float), inv_freq_);
}

Tensor CalibForward::put(const float* x, std::vector<int64_t> shape, const char* name) {
  Tensor t = be_.empty(DType::F32, std::move(shape), name);
  be_.from_host(x, t.nbytes(), t);
  return t;
}

std::unique_ptr<Linear> CalibForward::handle(const float* w_t, int64_t in, int64_t out) {
  TensorView v;
  v.name = "calibration weight";
  v.file = "quantizer";
  v.dtype = DType::F32;
  v.shape = {in, out};
  v.data = w_t;
  v.nbytes = size_t(in * out) * sizeof(float);
  LinearSource src;
  src.name = v.name;
  src.weight = &v;
  src.transposed = true;
  return be_.prepare_linear(src);
}

void CalibForward::linear(const float* w_t, const Tensor& x, Tensor& y) {
  be_.linear(*handle(w_t, x.row_size(), y.row_size()), x, y);
}

void CalibForward::matmul(const float* x, int64_t n, int64_t in, const float* w_t, int64_t out, float* y) {
  const Tensor xt = put(x, {n, in}, "x");
  Tensor yt = be_.empty(DType::F32, {n, out}, "y");
  linear(w_t, xt, yt);
  be_.to_host(yt, y, yt.nbytes());
}

void CalibForward::rms_norm(const float* x, int64_t n, const float* w, float* y) {
  const int64_t d = cfg_.hidden_size;
  Tensor yt = be_.empty(DType::F32, {n, d}, "y");
  be_.rms_norm(put(x, {n, d}, "x"), put(w, {d}, "norm weight"), float(cfg_.rms_norm_eps), yt);
  be_.to_host(yt, y, yt.nbytes());
}

void CalibForward::attention_block(const float* x, const float* q_t, const float* k_t, const float* v_t,
                                   const float* o_t, const float* q_norm, const float* k_norm, float* out,
                                   std::vector<float>* ctx) {
  const int64_t N = samples_ * seq_len_, d = cfg_.hidden_size, hd = cfg_.head_dim;
  const int64_t qd = cfg_.num_attention_heads * hd, kvd = cfg_.num_key_value_heads * hd;
  const Tensor xt = put(x, {N, d}, "x");
  Tensor q = be_.empty(DType::F32, {N, qd}, "q"), att = be_.empty(DType::F32, {N, qd}, "attention out");
  Tensor k = be_.empty(DType::F32, {N, kvd}, "k"), v = be_.empty(DType::F32, {N, kvd}, "v");
  linear(q_t, xt, q);
  linear(k_t, xt, k);
  linear(v_t, xt, v);
  if (q_norm) {  // per head: rows = N·heads, d = head_dim
    const float eps = float(cfg_.rms_norm_eps);
    Tensor qh = q.reshaped({N * cfg_.num_attention_heads, hd}), kh = k.reshaped({N * cfg_.num_key_value_heads, hd});
    be_.rms_norm(qh, put(q_norm, {hd}, "q_norm"), eps, qh);
    be_.rms_norm(kh, put(k_norm, {hd}, "k_norm"), eps, kh);
  }
  // Every sample is its own sequence: positions 0..L-1 and a KV cache of its own.
  Tensor k_cache = be_.empty(be_.kv_dtype(), {seq_len_, kvd}, "k_cache");
  Tensor v_cache = be_.empty(be_.kv_dtype(), {seq_len_, kvd}, "v_cache");
  const AttentionShape shape{cfg_.num_attention_heads, cfg_.num_key_value_heads, int(hd), 0};
  for (int64_t s = 0; s < samples_; ++s) {
    Tensor qs = q.slice_rows(s * seq_len_, seq_len_), ks = k.slice_rows(s * seq_len_, seq_len_);
    Tensor os = att.slice_rows(s * seq_len_, seq_len_);
    be_.rope(qs, positions_, inv_freq_, cfg_.num_attention_heads, int(hd));
    be_.rope(ks, positions_, inv_freq_, cfg_.num_key_value_heads, int(hd));
    be_.attention(qs, ks, v.slice_rows(s * seq_len_, seq_len_), k_cache, v_cache, positions_, 0, shape, os);
  }
  Tensor o = be_.empty(DType::F32, {N, d}, "o");
  linear(o_t, att, o);
  be_.to_host(o, out, o.nbytes());
  if (ctx) {
    ctx->resize(size_t(N * qd));
    be_.to_host(att, ctx->data(), att.nbytes());
  }
}

Routing CalibForward::route(const float* x, int64_t n, const float* gate_t) {
  const int E = cfg_.num_local_experts, K = cfg_.num_experts_per_tok;
  Tensor logits = be_.empty(DType::F32, {n, E}, "router logits");
  linear(gate_t, put(x, {n, cfg_.hidden_size}, "x"), logits);
  Tensor ids = be_.empty(DType::I32, {n, K}, "expert ids"), w = be_.empty(DType::F32, {n, K}, "expert weights");
  be_.router(logits, K, cfg_.norm_topk_prob, ids, w);
  std::vector<int32_t> hid(size_t(n * K));
  std::vector<float> hw(size_t(n * K));
  be_.to_host(ids, hid.data(), ids.nbytes());
  be_.to_host(w, hw.data(), w.nbytes());
  Routing r;
  r.tokens.resize(size_t(E));
  r.weights.resize(size_t(E));
  for (int64_t t = 0; t < n; ++t)
    for (int j = 0; j < K; ++j) {
      const int e = hid[size_t(t * K + j)];
      r.tokens[size_t(e)].push_back(int32_t(t));
      r.weights[size_t(e)].push_back(hw[size_t(t * K + j)]);
    }
  return r;
}

void CalibForward::expert(const float* a, int64_t n_e, const float* w1_t, const float* w3_t, const float* w2_t,
                          float* h, float* y) {
  if (n_e == 0) return;
  const int64_t d = cfg_.hidden_size, inter = cfg_.intermediate_size;
  const Tensor at = put(a, {n_e, d}, "expert input");
  Tensor gate = be_.empty(DType::F32, {n_e, inter}, "gate"), up = be_.empty(DType::F32, {n_e, inter}, "up");
  linear(w1_t, at, gate);
  linear(w3_t, at, up);
  be_.swiglu(gate, up);
  Tensor yt = be_.empty(DType::F32, {n_e, d}, "expert out");
  linear(w2_t, gate, yt);
  be_.to_host(gate, h, gate.nbytes());
  be_.to_host(yt, y, yt.nbytes());
}

void gather_rows(const float* x, int64_t d, const std::vector<int32_t>& rows, float* dst) {
  for (size_t r = 0; r < rows.size(); ++r) std::memcpy(dst + int64_t(r) * d, x + int64_t(rows[r]) * d, sizeof(float) * size_t(d));
}

}  // namespace mixq::quant
