// The CUDA backend: the op set of core/backend.h on one GPU or one logical device of a GPU (cuda:N/L: its own
// stream and arena, so several devices can be tested on one GPU). It registers itself for DeviceKind::Cuda.
// No CUDA header here.
#pragma once
#include <memory>
#include <vector>

#include "core/backend.h"

struct CUstream_st;  // = cudaStream_t, forward-declared so this header stays free of CUDA headers

namespace mixq {

// Ordinals of the visible GPUs (honours CUDA_VISIBLE_DEVICES); empty when there is no driver or no GPU.
std::vector<int> cuda_device_ids();

// The backend for `d` (kind Cuda). Throws mixq::Error when d.index is not a visible GPU.
std::unique_ptr<Backend> make_cuda_backend(const Device& d);

// The GPU-specific surface of a backend made by make_cuda_backend (dynamic_cast a Backend& to this).
class CudaBackend : public Backend {
 public:
  // The stream this backend's copies and kernels run on.
  virtual CUstream_st* stream() const = 0;
  virtual int ordinal() const = 0;
};

}  // namespace mixq
