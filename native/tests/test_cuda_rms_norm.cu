// rms_norm on the GPU against a plain CPU reference over a table of shapes and dtypes, in place and out of
// place, plus a determinism check (same inputs → bitwise same outputs).
#include <cstdint>

#include "rms_norm.h"
#include "test_cuda_util.h"

using mixq::DType;
using mixq::cuda::DeviceBuffer;

namespace {

// Host-side storage of one dtype: raw 16/32-bit words, converted with CUDA's host conversion functions.
double to_double(DType t, uint32_t bits) {
  if (t == DType::F32) { float f; std::memcpy(&f, &bits, 4); return f; }
  if (t == DType::F16) { __half_raw r; r.x = static_cast<uint16_t>(bits); return __half2float(__half(r)); }
  __nv_bfloat16_raw r; r.x = static_cast<uint16_t>(bits); return __bfloat162float(__nv_bfloat16(r));
}
uint32_t from_double(DType t, double v) {
  if (t == DType::F32) { float f = static_cast<float>(v); uint32_t b; std::memcpy(&b, &f, 4); return b; }
  if (t == DType::F16) { __half_raw r = __half(__double2half(v)); return r.x; }
  __nv_bfloat16_raw r = __nv_bfloat16(__double2bfloat16(v)); return r.x;
}
size_t size_of(DType t) { return t == DType::F32 ? 4 : 2; }
const char* name_of(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

// Packs words into bytes of the dtype's size.
std::vector<uint8_t> pack(DType t, const std::vector<uint32_t>& words) {
  std::vector<uint8_t> out(words.size() * size_of(t));
  for (size_t i = 0; i < words.size(); ++i) std::memcpy(&out[i * size_of(t)], &words[i], size_of(t));
  return out;
}
std::vector<uint32_t> unpack(DType t, const std::vector<uint8_t>& bytes) {
  std::vector<uint32_t> out(bytes.size() / size_of(t), 0);
  for (size_t i = 0; i < out.size(); ++i) std::memcpy(&out[i], &bytes[i * size_of(t)], size_of(t));
  return out;
}

// The reference: exactly the rounding sequence rms_norm.h documents, in double.
std::vector<double> reference(DType t, DType wt, const std::vector<uint32_t>& x, const std::vector<uint32_t>& w,
                              int64_t rows, int64_t hidden, double eps) {
  std::vector<double> y(rows * hidden);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < hidden; ++i) { const double v = to_double(t, x[r * hidden + i]); ss += v * v; }
    const double inv = 1.0 / std::sqrt(ss / hidden + eps);
    for (int64_t i = 0; i < hidden; ++i) {
      const double normed = to_double(t, from_double(t, to_double(t, x[r * hidden + i]) * inv));
      y[r * hidden + i] = to_double(t, from_double(t, to_double(wt, w[i]) * normed));
    }
  }
  return y;
}

struct Case {
  int64_t rows, hidden;
  DType dtype, weight_dtype;
  float eps;
  bool in_place;
  double tol;  // relative L2 error bound: one rounding of the output dtype, plus a little
};

}  // namespace

int main() {
  test::skip_without_gpu();
  const Case cases[] = {
      {1, 4096, DType::F32, DType::F32, 1e-5f, false, 1e-6},     // Mixtral decode, f32 path
      {7, 4096, DType::F16, DType::BF16, 1e-5f, false, 2e-3},    // fp16 activations, bf16 checkpoint weight
      {300, 4096, DType::BF16, DType::BF16, 1e-5f, false, 1e-2},  // prefill, bf16 end to end
      {5, 256, DType::F16, DType::F16, 1e-5f, true, 2e-3},       // tiny model, in place
      {3, 256, DType::F32, DType::BF16, 1e-6f, true, 1e-6},
      {4, 4095, DType::F16, DType::F32, 1e-5f, false, 2e-3},     // odd width: scalar path
      {2, 5, DType::F32, DType::F16, 1e-5f, false, 1e-6},
      {70000, 8, DType::F16, DType::F16, 1e-5f, false, 2e-3},    // more rows than grid.x: blocks loop over rows
  };
  std::mt19937 rng(1234);
  for (const Case& c : cases) {
    std::normal_distribution<double> xd(0.0, 3.0);
    std::uniform_real_distribution<double> wd(-2.0, 2.0);
    std::vector<uint32_t> x(c.rows * c.hidden), w(c.hidden);
    for (auto& v : x) v = from_double(c.dtype, xd(rng));
    for (auto& v : w) v = from_double(c.weight_dtype, wd(rng));
    DeviceBuffer dx = test::upload(pack(c.dtype, x));
    DeviceBuffer dw = test::upload(pack(c.weight_dtype, w));
    DeviceBuffer dy(0, c.rows * c.hidden * size_of(c.dtype));
    test::poison(dy);
    void* yptr = c.in_place ? dx.data() : dy.data();
    mixq::cuda::rms_norm(dx.data(), dw.data(), yptr, c.rows, c.hidden, c.eps, c.dtype, c.weight_dtype, 0);
    const auto got_words = unpack(c.dtype, test::download<uint8_t>(c.in_place ? dx : dy, c.rows * c.hidden * size_of(c.dtype)));
    std::vector<double> got(got_words.size());
    for (size_t i = 0; i < got.size(); ++i) got[i] = to_double(c.dtype, got_words[i]);
    const auto ref = reference(c.dtype, c.weight_dtype, x, w, c.rows, c.hidden, c.eps);
    const double err = test::rel_err(got, ref);
    std::printf("  rms_norm rows=%lld hidden=%lld x=%s w=%s%s: rel err %.3g (tol %.1g)\n", (long long)c.rows,
                (long long)c.hidden, name_of(c.dtype), name_of(c.weight_dtype), c.in_place ? " in-place" : "", err,
                c.tol);
    EXPECT(err <= c.tol, "rows=%lld hidden=%lld: rel err %g > %g", (long long)c.rows, (long long)c.hidden, err, c.tol);
  }

  // Determinism: repeated runs on the same inputs give identical bits.
  {
    const int64_t rows = 64, hidden = 4096;
    std::vector<uint32_t> x(rows * hidden), w(hidden);
    std::normal_distribution<double> d(0.0, 1.0);
    for (auto& v : x) v = from_double(DType::F16, d(rng));
    for (auto& v : w) v = from_double(DType::BF16, d(rng));
    DeviceBuffer dx = test::upload(pack(DType::F16, x)), dw = test::upload(pack(DType::BF16, w));
    DeviceBuffer dy(0, rows * hidden * 2);
    std::vector<uint8_t> first;
    for (int run = 0; run < 5; ++run) {
      test::poison(dy);
      mixq::cuda::rms_norm(dx.data(), dw.data(), dy.data(), rows, hidden, 1e-5f, DType::F16, DType::BF16, 0);
      auto out = test::download<uint8_t>(dy, rows * hidden * 2);
      if (run == 0) first = out;
      EXPECT(out == first, "run %d differs from run 0", run);
    }
    std::printf("  rms_norm determinism: 5 runs bitwise identical\n");
  }
  return test::finish("test_cuda_rms_norm");
}
