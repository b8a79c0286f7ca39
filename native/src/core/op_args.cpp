#include "op_args.h"

#include <string>

#include "error.h"
#include "ops/router.h"

namespace mixq::op_args {

namespace {

std::string where(const char* op, const Device& dev) { return std::string(op) + " on " + dev.str(); }
#define ARG(cond, what) MIXQ_CHECK_ARG(cond, where(kOp, dev), what)

void f32(const char* kOp, const Device& dev, const Tensor& t, const char* role) {
  ARG(t.dtype == DType::F32, std::string("tensor ") + role + " must be F32, not " + dtype_name(t.dtype));
}

}  // namespace

void embed(const Device& dev, const Tensor& table, const Tensor& ids, const Tensor& x) {
  const char* kOp = "embed";
  check_devices(kOp, dev, {{"table", &table}, {"ids", &ids}, {"x", &x}});
  ARG(ids.dtype == DType::I32 && x.rows() == ids.numel() && x.row_size() == table.row_size(),
      "ids " + ids.shape_str() + " / x " + x.shape_str() + " do not match table " + table.shape_str());
  f32(kOp, dev, x, "x");
}

void argmax(const Device& dev, const Tensor& x, const Tensor& ids) {
  const char* kOp = "argmax";
  check_devices(kOp, dev, {{"x", &x}, {"ids", &ids}});
  f32(kOp, dev, x, "x");
  ARG(ids.dtype == DType::I32 && ids.numel() == x.rows() && x.row_size() > 0 && x.row_size() < (int64_t{1} << 31),
      "ids " + ids.shape_str() + " is not [rows] i32 of x " + x.shape_str());
}

void rms_norm(const Device& dev, const Tensor& x, const Tensor& w, const Tensor& y) {
  const char* kOp = "rms_norm";
  check_devices(kOp, dev, {{"x", &x}, {"w", &w}, {"y", &y}});
  ARG(w.numel() == x.row_size() && y.numel() == x.numel(),
      "x " + x.shape_str() + ", w " + w.shape_str() + ", y " + y.shape_str() + " do not match");
  f32(kOp, dev, x, "x");
}

void rope(const Device& dev, const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int heads,
          int head_dim) {
  const char* kOp = "rope";
  check_devices(kOp, dev, {{"x", &x}, {"positions", &positions}, {"inv_freq", &inv_freq}});
  ARG(x.row_size() == int64_t(heads) * head_dim && positions.numel() == x.rows() && inv_freq.numel() == head_dim / 2,
      "x " + x.shape_str() + " is not [positions, " + std::to_string(heads) + "·" + std::to_string(head_dim) + "]");
}

void attention(const Device& dev, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k_cache,
               const Tensor& v_cache, const Tensor& positions, int64_t n_past, const AttentionShape& s,
               DType kv_dtype, const Tensor& out) {
  const char* kOp = "attention";
  check_devices(kOp, dev, {{"q", &q}, {"k", &k}, {"v", &v}, {"k_cache", &k_cache}, {"v_cache", &v_cache},
                           {"positions", &positions}, {"out", &out}});
  const int64_t n = q.rows(), kv_dim = int64_t(s.kv_heads) * s.head_dim;
  ARG(n_past >= 0 && n_past + n <= k_cache.rows() && k_cache.row_size() == kv_dim && k.row_size() == kv_dim &&
          v.numel() == k.numel() && v_cache.numel() == k_cache.numel() &&
          q.row_size() == int64_t(s.heads) * s.head_dim && out.numel() == q.numel(),
      "q " + q.shape_str() + ", k " + k.shape_str() + ", cache " + k_cache.shape_str() + " at position " +
          std::to_string(n_past) + " do not match the attention shape");
  ARG(positions.dtype == DType::I32 && positions.numel() == n,
      "positions " + positions.shape_str() + " " + dtype_name(positions.dtype) + " are not [" + std::to_string(n) +
          "] I32");
  ARG(k_cache.dtype == kv_dtype && v_cache.dtype == kv_dtype,
      std::string("KV caches ") + dtype_name(k_cache.dtype) + "/" + dtype_name(v_cache.dtype) +
          " are not this backend's KV dtype " + dtype_name(kv_dtype));
  f32(kOp, dev, q, "q");
  f32(kOp, dev, k, "k");
  f32(kOp, dev, v, "v");
  f32(kOp, dev, out, "out");
}

void linear(const Device& dev, const Linear& w, const Tensor& x, const Tensor& y) {
  const char* kOp = "linear";
  check_devices(kOp, dev, {{"x", &x}, {"y", &y}});
  check_linear_device(kOp, dev, w);
  ARG(x.row_size() == w.in_features && y.row_size() == w.out_features && x.rows() == y.rows(),
      w.name + " [" + std::to_string(w.out_features) + ", " + std::to_string(w.in_features) + "]: x " +
          x.shape_str() + ", y " + y.shape_str());
  f32(kOp, dev, x, "x");
}

void router(const Device& dev, const Tensor& logits, int top_k, const Tensor& ids, const Tensor& weights) {
  const char* kOp = "router";
  check_devices(kOp, dev, {{"logits", &logits}, {"ids", &ids}, {"weights", &weights}});
  const int64_t n = logits.rows(), E = logits.row_size();
  ARG(E >= 1 && E <= kMaxExperts && top_k >= 1 && top_k <= kMaxTopK && top_k <= E,
      std::to_string(E) + " experts top-" + std::to_string(top_k) + " (limits: E ≤ 256, k ≤ 8)");
  ARG(ids.numel() == n * top_k && weights.numel() == n * top_k, std::string("ids/weights are not [n, k]"));
}

void moe_experts(const Device& dev, const Tensor& x, const Tensor& ids, const Tensor& weights, const Tensor& slots) {
  const char* kOp = "moe_experts";
  check_devices(kOp, dev, {{"x", &x}, {"ids", &ids}, {"weights", &weights}, {"slots", &slots}});
  ARG(ids.rows() == x.rows() && weights.numel() == ids.numel() && slots.numel() == ids.numel() * x.row_size(),
      "x " + x.shape_str() + ", ids " + ids.shape_str() + ", slots " + slots.shape_str() + " do not match");
}

void moe_combine(const Device& dev, const std::vector<const Tensor*>& slots, const std::vector<int>& owner,
                 const Tensor& ids, const Tensor& out) {
  const char* kOp = "moe_combine";
  check_devices(kOp, dev, {{"ids", &ids}, {"out", &out}});
  ARG(slots.size() <= 8 && owner.size() <= size_t(kMaxExperts), std::string("at most 8 slot tensors and 256 experts"));
  for (const Tensor* s : slots) {
    check_devices(kOp, dev, {{"slots", s}});
    ARG(s->numel() == ids.numel() * out.row_size(), "slots " + s->shape_str() + " are not [n·k, hidden]");
  }
  for (int o : owner) ARG(o >= 0 && size_t(o) < slots.size(), std::string("expert owner out of range"));
}

void add(const Device& dev, const Tensor& a, const Tensor& b, const Tensor& y) {
  const char* kOp = "add";
  check_devices(kOp, dev, {{"a", &a}, {"b", &b}, {"y", &y}});
  ARG(a.numel() == b.numel() && a.numel() == y.numel(), "shapes " + a.shape_str() + " and " + b.shape_str());
}

void swiglu(const Device& dev, const Tensor& a, const Tensor& b) {
  const char* kOp = "swiglu";
  check_devices(kOp, dev, {{"a", &a}, {"b", &b}});
  ARG(a.numel() == b.numel(), "shapes " + a.shape_str() + " and " + b.shape_str());
}

void from_host(const Device& dev, size_t bytes, const Tensor& dst) {
  const char* kOp = "from_host";
  check_devices(kOp, dev, {{"dst", &dst}});
  ARG(bytes <= dst.nbytes(), "copy of " + std::to_string(bytes) + " bytes exceeds tensor " + dst.name);
}

void to_host(const Device& dev, const Tensor& src, size_t bytes) {
  const char* kOp = "to_host";
  check_devices(kOp, dev, {{"src", &src}});
  ARG(bytes <= src.nbytes(), "copy of " + std::to_string(bytes) + " bytes exceeds tensor " + src.name);
}

void copy(const Device& dev, const Tensor& src, const Tensor& dst) {
  const char* kOp = "copy";
  ARG(src.device() == dev || dst.device() == dev,
      "neither " + src.device().str() + " nor " + dst.device().str() + " is this device");
  ARG(src.nbytes() == dst.nbytes() && src.dtype == dst.dtype,
      "tensor " + src.name + " " + src.shape_str() + " does not match " + dst.name + " " + dst.shape_str());
}

#undef ARG

}  // namespace mixq::op_args
