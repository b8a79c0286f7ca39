// Checked CUDA runtime calls: every failure becomes a mixq::Error naming the call, file and line.
//   CUDA_CHECK(cudaMalloc(&p, n));        // throws on error
//   kernel<<<g, b, 0, s>>>(...); CUDA_CHECK_LAUNCH();   // launch-configuration errors
// Only CUDA sources include this (model code never includes CUDA headers).
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "error.h"

namespace mixq::cuda {

// Throws mixq::Error("CUDA error cudaErrorX (text) in `expr` at file:line").
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);

inline void check(cudaError_t err, const char* expr, const char* file, int line) {
  if (err != cudaSuccess) {
    // Reset the runtime's last-error slot, or a later CUDA_CHECK_LAUNCH would report this error again.
    // (Sticky errors — a faulted kernel — stay: every later call fails, which is the truth.)
    (void)cudaGetLastError();
    throw_cuda_error(err, expr, file, line);
  }
}

// "cuda:N" — formatted here so this library does not depend on the engine core's Device::str().
inline std::string device_name(int ordinal) { return "cuda:" + std::to_string(ordinal); }

}  // namespace mixq::cuda

#define CUDA_CHECK(expr) ::mixq::cuda::check((expr), #expr, __FILE__, __LINE__)
// After a <<<>>> launch: reports a bad launch configuration at the launch site. Errors raised while the
// kernel runs (illegal address, ...) surface at the next synchronizing call, which is checked as well.
#define CUDA_CHECK_LAUNCH() ::mixq::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
