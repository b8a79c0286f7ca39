// DeviceBuffer (device_buffer.h).
#include "device_buffer.h"

#include <cstdio>
#include <string>
#include <utility>

#include "cuda_check.h"
#include "device_guard.h"

namespace mixq::cuda {

DeviceBuffer::DeviceBuffer(int device, size_t bytes) : device_(device) {
  DeviceGuard guard(device);
  if (bytes == 0) return;
  cudaError_t err = cudaMalloc(&data_, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // an OOM is not sticky; clear it so later calls are unaffected
    data_ = nullptr;
    size_t free_b = 0, total_b = 0;
    std::string free_str = "?";
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      free_str = std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB";
    else
      (void)cudaGetLastError();
    throw Error("out of GPU memory on " + device_name(device) + ": cannot allocate " + std::to_string(bytes) +
                " bytes (" + free_str + "): " + cudaGetErrorString(err));
  }
  bytes_ = bytes;
}

void DeviceBuffer::release() noexcept {
  if (data_ == nullptr) return;
  int prev = 0;
  if (cudaGetDevice(&prev) == cudaSuccess && prev != device_) cudaSetDevice(device_);
  cudaError_t err = cudaFree(data_);
  if (err != cudaSuccess)
    std::fprintf(stderr, "mixq: cudaFree on %s failed: %s\n", device_name(device_).c_str(), cudaGetErrorString(err));
  if (prev != device_) cudaSetDevice(prev);
  data_ = nullptr;
  bytes_ = 0;
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), device_(o.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    device_ = o.device_;
  }
  return *this;
}

}  // namespace mixq::cuda
