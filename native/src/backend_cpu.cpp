// The CPU backend (host memory) and the device registry: cpu always, cuda:N when compiled in.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "backend.h"
#include "cpu_features.h"
#include "error.h"

#ifdef MIXQ_WITH_CUDA
#include "cuda_backend.h"
#endif

namespace mixq {

std::string Device::str() const {
  return kind == DeviceKind::Cpu ? std::string("cpu") : "cuda:" + std::to_string(index);
}

namespace {

// Reads a "Key:   N kB" line of /proc/meminfo; 0 when unavailable.
size_t meminfo_bytes(const char* key) {
  std::ifstream f("/proc/meminfo");
  std::string line;
  const size_t klen = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, klen, key) == 0 && line.size() > klen && line[klen] == ':') {
      std::istringstream s(line.substr(klen + 1));
      size_t kb = 0;
      s >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

class CpuBuffer final : public Buffer {
 public:
  explicit CpuBuffer(size_t bytes) : size_(bytes) {
    // 64-byte alignment: one cache line, one AVX-512 register.
    const size_t rounded = (bytes + 63) / 64 * 64;
    data_ = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    if (rounded && !data_) throw Error("cpu: out of memory allocating " + std::to_string(bytes) + " bytes");
  }
  ~CpuBuffer() override { std::free(data_); }
  void* data() override { return data_; }
  size_t size() const override { return size_; }
  Device device() const override { return Device{DeviceKind::Cpu, 0}; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device{DeviceKind::Cpu, 0}; }
  std::string name() const override { return "cpu (" + cpu_simd_level() + ")"; }
  size_t free_memory() const override { return meminfo_bytes("MemAvailable"); }
  size_t total_memory() const override { return meminfo_bytes("MemTotal"); }
  std::unique_ptr<Buffer> alloc(size_t bytes) override { return std::make_unique<CpuBuffer>(bytes); }
  void copy_from_host(Buffer& dst, size_t offset, const void* src, size_t bytes) override {
    check(dst.size(), offset, bytes);
    std::memcpy(static_cast<char*>(dst.data()) + offset, src, bytes);
  }
  void copy_to_host(void* dst, const Buffer& src, size_t offset, size_t bytes) override {
    check(src.size(), offset, bytes);
    std::memcpy(dst, static_cast<const char*>(const_cast<Buffer&>(src).data()) + offset, bytes);
  }
  void synchronize() override {}

 private:
  static void check(size_t size, size_t offset, size_t bytes) {
    if (offset > size || bytes > size - offset) {
      throw Error("cpu: copy of " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                  " exceeds the buffer of " + std::to_string(size) + " bytes");
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

bool cuda_compiled() {
#ifdef MIXQ_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<Device> available_devices() {
  std::vector<Device> out{Device{DeviceKind::Cpu, 0}};
#ifdef MIXQ_WITH_CUDA
  for (int id : cuda_device_ids()) out.push_back(Device{DeviceKind::Cuda, id});
#endif
  return out;
}

std::unique_ptr<Backend> make_backend(const Device& d) {
  if (d.kind == DeviceKind::Cpu) return make_cpu_backend();
#ifdef MIXQ_WITH_CUDA
  for (int id : cuda_device_ids())
    if (id == d.index) return make_cuda_backend(d.index);
  throw Error("device " + d.str() + " not found (visible CUDA devices: " + std::to_string(cuda_device_ids().size()) + ")");
#else
  throw Error("device " + d.str() + ": this build has no CUDA backend (nvcc was not found at build time)");
#endif
}

}  // namespace mixq
