// Shared helpers for the GPU tests (test_cuda_*.cu): skip without a GPU, checks that count failures,
// random data, relative error, device upload/download.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "device_buffer.h"
#include "device_guard.h"

namespace test {

inline int g_failures = 0;

#define EXPECT(cond, ...)                                                   \
  do {                                                                      \
    if (!(cond)) {                                                          \
      ++::test::g_failures;                                                 \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                    \
      std::fprintf(stderr, "\n");                                           \
    }                                                                       \
  } while (0)

// Runs `body`, expects a mixq::Error whose message contains every string of `needles`.
template <class F>
void expect_error(const char* what, F body, std::initializer_list<const char*> needles) {
  try {
    body();
    ++g_failures;
    std::fprintf(stderr, "FAIL %s: no error thrown\n", what);
  } catch (const mixq::Error& e) {
    const std::string msg = e.what();
    for (const char* n : needles)
      if (msg.find(n) == std::string::npos) {
        ++g_failures;
        std::fprintf(stderr, "FAIL %s: message lacks \"%s\": %s\n", what, n, msg.c_str());
      }
    std::printf("  ok  %s -> %s\n", what, msg.c_str());
  }
}

// Exits 77 (ctest SKIP) when no GPU is visible: CI machines have nvcc but no GPU.
inline void skip_without_gpu() {
  if (mixq::cuda::visible_device_count() == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    std::exit(77);
  }
}

inline int finish(const char* name) {
  if (g_failures) {
    std::printf("%s: %d FAILURE(S)\n", name, g_failures);
    return 1;
  }
  std::printf("%s: all passed\n", name);
  return 0;
}

// ‖a − b‖ / ‖b‖ (b the reference); NaN/inf anywhere in a gives +inf.
inline double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

template <class T>
mixq::cuda::DeviceBuffer upload(const std::vector<T>& host, int device = 0) {
  mixq::cuda::DeviceBuffer buf(device, host.size() * sizeof(T));
  mixq::cuda::DeviceGuard guard(device);
  if (!host.empty()) CUDA_CHECK(cudaMemcpy(buf.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return buf;
}

template <class T>
std::vector<T> download(const mixq::cuda::DeviceBuffer& buf, size_t count) {
  std::vector<T> host(count);
  mixq::cuda::DeviceGuard guard(buf.device());
  CUDA_CHECK(cudaDeviceSynchronize());
  if (count) CUDA_CHECK(cudaMemcpy(host.data(), buf.data(), count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

// Fills a device buffer with 0xFF bytes (NaN for f32/f16/bf16, −1 for int32) so unwritten outputs show.
inline void poison(mixq::cuda::DeviceBuffer& buf) {
  mixq::cuda::DeviceGuard guard(buf.device());
  CUDA_CHECK(cudaMemset(buf.data(), 0xFF, buf.size()));
}

}  // namespace test
