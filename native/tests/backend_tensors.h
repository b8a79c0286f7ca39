// Tests' host <-> backend tensor helpers (header-only: the CPU tests and the CUDA tests that link only the CUDA
// backend both use them).
#pragma once
#include <limits>
#include <string>
#include <vector>

#include "core/backend.h"

namespace mixq_test {

// A new tensor of `b` holding `v`.
template <class T>
mixq::Tensor put(mixq::Backend& b, const std::vector<T>& v, std::vector<int64_t> shape, mixq::DType dt,
                 const std::string& name) {
  mixq::Tensor t = b.empty(dt, std::move(shape), name);
  b.from_host(v.data(), v.size() * sizeof(T), t);
  return t;
}
inline mixq::Tensor putf(mixq::Backend& b, const std::vector<float>& v, std::vector<int64_t> shape,
                         const std::string& name) {
  return put(b, v, std::move(shape), mixq::DType::F32, name);
}
// An f32 tensor full of NaN: an op that leaves part of its output unwritten shows it.
inline mixq::Tensor poisoned(mixq::Backend& b, std::vector<int64_t> shape, const std::string& name) {
  mixq::Tensor t = b.empty(mixq::DType::F32, std::move(shape), name);
  const std::vector<float> nan(size_t(t.numel()), std::numeric_limits<float>::quiet_NaN());
  b.from_host(nan.data(), nan.size() * 4, t);
  return t;
}
// The tensor's elements on the host (waits for the backend's queued work).
template <class T = float>
std::vector<T> get(mixq::Backend& b, const mixq::Tensor& t) {
  std::vector<T> v(size_t(t.numel()));
  b.to_host(t, v.data(), v.size() * sizeof(T));
  return v;
}

}  // namespace mixq_test
