// Device placement helpers used by every CUDA entry point:
//   DeviceGuard      — RAII: makes a device current, restores the previous one on scope exit (also on throw).
//   device_of_tensors — finds the device of an op's tensors and verifies that every pointer is device memory
//                       on that same device (cudaPointerGetAttributes): the wrong-device checker.
//   check_stream_device — a stream given by the caller must belong to that device.
// Why: a launcher that runs on whatever device happens to be current, not the one its tensors live on, is the
// multi-GPU "illegal memory access" bug of AutoAWQ issue #341; every entry here opens a guard first.
#pragma once
#include <cuda_runtime.h>

#include <initializer_list>

namespace mixq::cuda {

class DeviceGuard {
 public:
  // Throws mixq::Error (naming the ordinal and the number of visible devices) when `device` is invalid;
  // the current device is then left unchanged.
  explicit DeviceGuard(int device);
  ~DeviceGuard();  // restores the previous device; never throws
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  int device() const { return device_; }
  int previous() const { return previous_; }

 private:
  int device_ = 0;
  int previous_ = 0;
};

// One tensor argument of an op, for the wrong-device check: `name` appears in error messages.
struct TensorArg {
  const void* ptr;
  const char* name;
};

// Returns the ordinal of the device all `tensors` live on. Throws mixq::Error naming `op` and the offending
// tensor when a pointer is null, host memory (pageable or pinned), managed memory, or device memory of another
// device than the first tensor's.
int device_of_tensors(const char* op, std::initializer_list<TensorArg> tensors);

// Throws when `stream` (not the legacy/per-thread default stream) was created on a device other than `device`.
void check_stream_device(const char* op, cudaStream_t stream, int device);

// Number of visible CUDA devices; 0 (never an error) when there is no driver or no GPU.
int visible_device_count();

}  // namespace mixq::cuda
