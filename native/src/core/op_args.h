// The contract of every op of core/backend.h checked in one place, for every backend: all tensors on the op's
// device (the checker: core/backend.h check_devices) and shapes/dtypes as the op headers give them. Each throws
// mixq::Error "OP on DEVICE: what is wrong"; messages are built only when a check fails.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"

namespace mixq::op_args {

void embed(const Device& dev, const Tensor& table, const Tensor& ids, const Tensor& x);
void argmax(const Device& dev, const Tensor& x, const Tensor& ids);
void rms_norm(const Device& dev, const Tensor& x, const Tensor& w, const Tensor& y);
void rope(const Device& dev, const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int heads, int head_dim);
// Caches of dtype `kv_dtype` (the backend's Backend::kv_dtype()); positions [n] i32.
void attention(const Device& dev, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k_cache,
               const Tensor& v_cache, const Tensor& positions, int64_t n_past, const AttentionShape& s,
               DType kv_dtype, const Tensor& out);
void linear(const Device& dev, const Linear& w, const Tensor& x, const Tensor& y);
void router(const Device& dev, const Tensor& logits, int top_k, const Tensor& ids, const Tensor& weights);
void moe_experts(const Device& dev, const Tensor& x, const Tensor& ids, const Tensor& weights, const Tensor& slots);
void moe_combine(const Device& dev, const std::vector<const Tensor*>& slots, const std::vector<int>& owner,
                 const Tensor& ids, const Tensor& out);
void add(const Device& dev, const Tensor& a, const Tensor& b, const Tensor& y);
void swiglu(const Device& dev, const Tensor& a, const Tensor& b);
void from_host(const Device& dev, size_t bytes, const Tensor& dst);
void to_host(const Device& dev, const Tensor& src, size_t bytes);
// dst = src: same bytes and dtype; one side on `dev`.
void copy(const Device& dev, const Tensor& src, const Tensor& dst);

}  // namespace mixq::op_args
