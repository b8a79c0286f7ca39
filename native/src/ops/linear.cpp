#include "linear.h"

#include <vector>

#include "core/linear.h"

namespace mixq {

void linear_reference(const Linear& w, const float* x, int64_t n, float* y) {
  std::vector<float> row(size_t(w.in_features));
  for (int64_t o = 0; o < w.out_features; ++o) {
    w.weight_row(o, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0;
      for (int64_t i = 0; i < w.in_features; ++i) acc += double(row[size_t(i)]) * x[t * w.in_features + i];
      y[t * w.out_features + o] = float(acc);
    }
  }
}

}  // namespace mixq
