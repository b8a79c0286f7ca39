// Backend for one GPU (cuda_backend.h): allocations are DeviceBuffers; copies run on the backend's own
// non-blocking stream and are complete when the call returns; every call opens a DeviceGuard first.
#include <cstdio>
#include <string>

#include "cuda_backend.h"
#include "cuda_check.h"
#include "device_buffer.h"
#include "device_guard.h"

namespace mixq {
namespace {

using cuda::DeviceBuffer;
using cuda::DeviceGuard;

class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(int ordinal, size_t bytes) : mem_(ordinal, bytes) {}
  void* data() override { return mem_.data(); }
  size_t size() const override { return mem_.size(); }
  Device device() const override { return Device{DeviceKind::Cuda, mem_.device()}; }

 private:
  DeviceBuffer mem_;
};

class CudaBackendImpl final : public CudaBackend {
 public:
  explicit CudaBackendImpl(int ordinal) : ordinal_(ordinal) {
    DeviceGuard guard(ordinal);
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
    name_ = cuda::device_name(ordinal) + " " + prop.name;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaBackendImpl() override {
    int prev = 0;
    if (cudaGetDevice(&prev) != cudaSuccess) prev = ordinal_;
    cudaSetDevice(ordinal_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
    cudaSetDevice(prev);
  }

  Device device() const override { return Device{DeviceKind::Cuda, ordinal_}; }
  std::string name() const override { return name_; }
  int ordinal() const override { return ordinal_; }
  CUstream_st* stream() const override { return stream_; }

  size_t free_memory() const override { return mem_info().first; }
  size_t total_memory() const override { return mem_info().second; }

  std::unique_ptr<Buffer> alloc(size_t bytes) override { return std::make_unique<CudaBuffer>(ordinal_, bytes); }

  void copy_from_host(Buffer& dst, size_t offset, const void* src, size_t bytes) override {
    check_range("copy_from_host", dst, offset, bytes);
    DeviceGuard guard(ordinal_);
    CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst.data()) + offset, src, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller may free or reuse `src` as soon as we return
  }

  void copy_to_host(void* dst, const Buffer& src, size_t offset, size_t bytes) override {
    check_range("copy_to_host", src, offset, bytes);
    DeviceGuard guard(ordinal_);
    // Buffer::data() is non-const in the interface; the bytes are only read here.
    void* base = const_cast<Buffer&>(src).data();
    CUDA_CHECK(cudaMemcpyAsync(dst, static_cast<const char*>(base) + offset, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void synchronize() override {
    DeviceGuard guard(ordinal_);
    // Everything queued on this GPU, not only this backend's stream: ops may run on callers' streams.
    CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  std::pair<size_t, size_t> mem_info() const {
    DeviceGuard guard(ordinal_);
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return {free_b, total_b};
  }

  void check_range(const char* what, const Buffer& buf, size_t offset, size_t bytes) const {
    const Device d = buf.device();
    if (d.kind != DeviceKind::Cuda || d.index != ordinal_)
      throw Error(std::string(what) + ": buffer lives on " +
                  (d.kind == DeviceKind::Cuda ? cuda::device_name(d.index) : std::string("cpu")) +
                  ", not on this backend's " + cuda::device_name(ordinal_));
    if (offset > buf.size() || bytes > buf.size() - offset)
      throw Error(std::string(what) + ": range [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
                  ") is outside the " + std::to_string(buf.size()) + "-byte buffer on " +
                  cuda::device_name(ordinal_));
  }

  int ordinal_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::vector<int> cuda_device_ids() {
  std::vector<int> ids;
  const int n = cuda::visible_device_count();
  for (int i = 0; i < n; ++i) ids.push_back(i);
  return ids;
}

std::unique_ptr<CudaBackend> make_cuda_backend(int ordinal) {
  const int n = cuda::visible_device_count();
  if (ordinal < 0 || ordinal >= n)
    throw Error("no CUDA device " + cuda::device_name(ordinal) + " (" + std::to_string(n) +
                " CUDA device(s) visible in this process)");
  return std::make_unique<CudaBackendImpl>(ordinal);
}

}  // namespace mixq
