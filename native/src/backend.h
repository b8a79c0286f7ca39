// The backend interface: memory per device, compute on a stream, copies between devices.
// Model code talks to this, never to CUDA directly. The CPU backend is always built; the CUDA
// backend (native/cuda/) is compiled when nvcc is found and registers itself at start-up.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace mixq {

enum class DeviceKind { Cpu, Cuda };

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;  // GPU ordinal for Cuda
  std::string str() const;  // "cpu", "cuda:1"
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
};

// A block of memory owned by one device; freed by its destructor.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() = 0;
  virtual size_t size() const = 0;
  virtual Device device() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;               // "cpu (AVX-512)", "cuda:0 NVIDIA H100"
  virtual size_t free_memory() const = 0;              // bytes
  virtual size_t total_memory() const = 0;
  virtual std::unique_ptr<Buffer> alloc(size_t bytes) = 0;  // throws mixq::Error naming the device on OOM
  virtual void copy_from_host(Buffer& dst, size_t offset, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const Buffer& src, size_t offset, size_t bytes) = 0;
  virtual void synchronize() = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
// Devices usable in this build: always cpu; cuda:N for each visible GPU when built with CUDA.
std::vector<Device> available_devices();
// Creates the backend for `d`; throws mixq::Error when this build or machine has no such device.
std::unique_ptr<Backend> make_backend(const Device& d);
bool cuda_compiled();  // true when this build includes the CUDA backend

}  // namespace mixq
