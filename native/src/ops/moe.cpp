#include "moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/linear.h"

namespace mixq {

void swiglu(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = a[i];
    a[i] = x / (1.0f + std::exp(-x)) * b[i];
  }
}

namespace {

// y[out] = W · x[in] with W's rows from weight_row, accumulated in double.
std::vector<float> matvec(const Linear& w, const float* x) {
  std::vector<float> row(size_t(w.in_features)), y(size_t(w.out_features));
  for (int64_t o = 0; o < w.out_features; ++o) {
    w.weight_row(o, row.data());
    double acc = 0;
    for (int64_t i = 0; i < w.in_features; ++i) acc += double(row[size_t(i)]) * x[i];
    y[size_t(o)] = float(acc);
  }
  return y;
}

}  // namespace

void moe_experts_reference(const std::vector<const Linear*>& w1, const std::vector<const Linear*>& w2,
                           const std::vector<const Linear*>& w3, const float* x, int64_t n, int64_t hidden,
                           const int32_t* ids, const float* weights, int k, float* slots) {
  for (int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < k; ++j) {
      const int e = ids[t * k + j];
      if (!w1[size_t(e)]) continue;
      std::vector<float> a = matvec(*w1[size_t(e)], x + t * hidden);
      const std::vector<float> b = matvec(*w3[size_t(e)], x + t * hidden);
      swiglu(a.data(), b.data(), int64_t(a.size()));
      const std::vector<float> y = matvec(*w2[size_t(e)], a.data());
      float* s = slots + (t * k + j) * hidden;
      for (int64_t i = 0; i < hidden; ++i) s[i] = y[size_t(i)] * weights[t * k + j];
    }
  }
}

void moe_combine_rows(const std::vector<const float*>& slots, const std::vector<int>& owner, const int32_t* ids,
                      int64_t n, int k, int64_t hidden, float* out) {
  int order[16];
  for (int64_t t = 0; t < n; ++t) {
    const int32_t* id = ids + t * k;
    std::iota(order, order + k, 0);
    std::sort(order, order + k, [&](int a, int b) { return id[a] < id[b]; });
    float* o = out + t * hidden;
    std::fill(o, o + hidden, 0.f);
    for (int i = 0; i < k; ++i) {
      const int j = order[i];
      const float* s = slots[size_t(owner[size_t(id[j])])] + (t * k + j) * hidden;
      for (int64_t c = 0; c < hidden; ++c) o[c] += s[c];
    }
  }
}

}  // namespace mixq
