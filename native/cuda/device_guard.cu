// DeviceGuard and the wrong-device checker (device_guard.h).
#include "device_guard.h"

#include <cstdio>
#include <string>

#include "cuda_check.h"

namespace mixq::cuda {

int visible_device_count() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    // No driver / no device (CI machines): not an error for callers, just "no GPU". Clear the error state.
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

DeviceGuard::DeviceGuard(int device) : device_(device) {
  CUDA_CHECK(cudaGetDevice(&previous_));
  if (device == previous_) return;
  const int n = visible_device_count();
  if (device < 0 || device >= n)
    throw Error("DeviceGuard: " + device_name(device) + " does not exist (" + std::to_string(n) +
                " CUDA device(s) visible)");
  CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  if (device_ != previous_) {
    cudaError_t err = cudaSetDevice(previous_);
    if (err != cudaSuccess)  // a destructor must not throw; report and carry on
      std::fprintf(stderr, "mixq: DeviceGuard could not restore %s: %s\n", device_name(previous_).c_str(),
                   cudaGetErrorString(err));
  }
}

namespace {

std::string ptr_str(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

const char* memory_type_name(cudaMemoryType t) {
  switch (t) {
    case cudaMemoryTypeUnregistered: return "pageable host memory";
    case cudaMemoryTypeHost: return "pinned host memory";
    case cudaMemoryTypeDevice: return "device memory";
    case cudaMemoryTypeManaged: return "managed memory";
  }
  return "unknown memory";
}

}  // namespace

int device_of_tensors(const char* op, std::initializer_list<TensorArg> tensors) {
  int device = -1;
  const char* first = nullptr;
  for (const TensorArg& t : tensors) {
    if (t.ptr == nullptr) throw Error(std::string(op) + ": tensor '" + t.name + "' is a null pointer");
    cudaPointerAttributes attr{};
    cudaError_t err = cudaPointerGetAttributes(&attr, t.ptr);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      throw Error(std::string(op) + ": cannot query tensor '" + t.name + "' at " + ptr_str(t.ptr) + ": " +
                  cudaGetErrorString(err));
    }
    if (attr.type != cudaMemoryTypeDevice)
      throw Error(std::string(op) + ": tensor '" + t.name + "' at " + ptr_str(t.ptr) + " is " +
                  memory_type_name(attr.type) + "; this op needs device memory (cudaMalloc) on one GPU");
    if (device < 0) {
      device = attr.device;
      first = t.name;
    } else if (attr.device != device) {
      throw Error(std::string(op) + ": tensor '" + t.name + "' lives on " + device_name(attr.device) +
                  " but tensor '" + first + "' lives on " + device_name(device) +
                  "; all tensors of one call must be on the same GPU");
    }
  }
  if (device < 0) throw Error(std::string(op) + ": no tensors given");
  return device;
}

void check_stream_device(const char* op, cudaStream_t stream, int device) {
  // The legacy and per-thread default streams denote "the current device's", which the guard just set.
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return;
  int stream_device = -1;
  CUDA_CHECK(cudaStreamGetDevice(stream, &stream_device));
  if (stream_device != device)
    throw Error(std::string(op) + ": the stream belongs to " + device_name(stream_device) +
                " but the tensors live on " + device_name(device));
}

}  // namespace mixq::cuda
