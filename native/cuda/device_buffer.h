// DeviceBuffer: RAII ownership of one cudaMalloc allocation on one GPU (allocated and freed under a
// DeviceGuard for that GPU, so it is safe whatever device is current). Move-only.
#pragma once
#include <cstddef>

namespace mixq::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Throws mixq::Error naming the device, the requested size and the free memory when allocation fails.
  DeviceBuffer(int device, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size() const { return bytes_; }
  int device() const { return device_; }

 private:
  void release() noexcept;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
};

}  // namespace mixq::cuda
