// The GPU device layer: memory and a stream per GPU, with every call guarded on its device. The CUDA model
// backend (the op set of core/backend.h on the GPU) builds on it; until that exists no CUDA factory is registered,
// so model code cannot pick a GPU and `--device cuda` says so. No CUDA header here.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"

struct CUstream_st;  // = cudaStream_t, forward-declared so this header stays free of CUDA headers

namespace mixq {

// Ordinals of the visible GPUs (honours CUDA_VISIBLE_DEVICES); empty when there is no driver or no GPU.
std::vector<int> cuda_device_ids();

class CudaBackend {
 public:
  virtual ~CudaBackend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cuda:0 NVIDIA H100"
  virtual size_t free_memory() const = 0;
  virtual size_t total_memory() const = 0;
  virtual std::unique_ptr<Buffer> alloc(size_t bytes) = 0;  // throws mixq::Error naming the device on OOM
  virtual void copy_from_host(Buffer& dst, size_t offset, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const Buffer& src, size_t offset, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // The stream this backend's copies run on; kernels of this device should be launched on it too.
  virtual CUstream_st* stream() const = 0;
  virtual int ordinal() const = 0;
};

// GPU `ordinal`: device memory per allocation, one non-blocking stream for its copies and compute.
// Throws mixq::Error when `ordinal` is not a visible GPU.
std::unique_ptr<CudaBackend> make_cuda_backend(int ordinal);

}  // namespace mixq
