#include "argmax.h"

namespace mixq {

int32_t argmax(const float* x, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] == x[i] && (best < 0 || x[i] > x[best])) best = i;  // x[i] == x[i]: not NaN
  return int32_t(best < 0 ? 0 : best);
}

void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* ids) {
  for (int64_t r = 0; r < rows; ++r) ids[r] = argmax(x + r * n, n);
}

}  // namespace mixq
