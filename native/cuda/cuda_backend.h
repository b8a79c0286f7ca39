// The CUDA implementation of the Backend interface (backend.h). No CUDA header here: the CPU engine's
// backend_cpu.cpp includes this under #ifdef MIXQ_WITH_CUDA to list and create GPU backends.
#pragma once
#include <memory>
#include <vector>

#include "backend.h"

struct CUstream_st;  // = cudaStream_t, forward-declared so this header stays free of CUDA headers

namespace mixq {

// Ordinals of the visible GPUs (honours CUDA_VISIBLE_DEVICES); empty when there is no driver or no GPU.
std::vector<int> cuda_device_ids();

// A backend for GPU `ordinal`: device memory per allocation, one non-blocking stream for its copies and
// compute. Throws mixq::Error when `ordinal` is not a visible GPU.
std::unique_ptr<Backend> make_cuda_backend(int ordinal);

// The GPU-specific surface of a backend made by make_cuda_backend (dynamic_cast a Backend& to this).
class CudaBackend : public Backend {
 public:
  // The stream this backend's copies run on; kernels of this device should be launched on it too.
  virtual CUstream_st* stream() const = 0;
  virtual int ordinal() const = 0;
};

}  // namespace mixq
