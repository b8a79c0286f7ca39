// cp.async (sm_80+): 16-byte global → shared copies that bypass registers, grouped and waited on per thread.
// A barrier is still needed before other threads read what a thread copied.
#pragma once
#include <cuda_runtime.h>

namespace mixq::cuda {

// Copies 16 bytes, or zero-fills them when !valid (gmem is then not read, but must still be a valid address).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `Pending` of this thread's committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending)); }

}  // namespace mixq::cuda
