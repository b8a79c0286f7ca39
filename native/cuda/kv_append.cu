// KV append (attention.h): k, v [n, kv_dim] f32 → f16 cache rows positions[t]. One thread per 4 elements of a
// row (16-byte loads, 8-byte stores); rows whose position lies outside [0, capacity) are skipped (the host
// checked the contract; this only keeps a bad positions tensor from writing out of bounds).
#include <algorithm>

#include "attention.h"
#include "cuda_check.h"

namespace mixq::cuda {
namespace {

__global__ void kv_append_kernel(const float4* __restrict__ k, const float4* __restrict__ v,
                                  const int32_t* __restrict__ positions, int64_t n, int64_t quads_per_row,
                                  int64_t capacity, uint2* __restrict__ k_cache, uint2* __restrict__ v_cache) {
  const int64_t total = n * quads_per_row;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / quads_per_row, i = idx % quads_per_row;
    const int64_t pos = positions[t];
    if (pos < 0 || pos >= capacity) continue;
    const float4 a = k[idx], b = v[idx];
    const __half2 a0 = __floats2half2_rn(a.x, a.y), a1 = __floats2half2_rn(a.z, a.w);
    const __half2 b0 = __floats2half2_rn(b.x, b.y), b1 = __floats2half2_rn(b.z, b.w);
    k_cache[pos * quads_per_row + i] = make_uint2(*reinterpret_cast<const uint32_t*>(&a0),
                                                  *reinterpret_cast<const uint32_t*>(&a1));
    v_cache[pos * quads_per_row + i] = make_uint2(*reinterpret_cast<const uint32_t*>(&b0),
                                                  *reinterpret_cast<const uint32_t*>(&b1));
  }
}

}  // namespace

void launch_kv_append(const float* k, const float* v, const int32_t* positions, int64_t n, int64_t kv_dim,
                      int64_t capacity, __half* k_cache, __half* v_cache, cudaStream_t stream) {
  if (n == 0) return;
  if (kv_dim % 4 != 0) throw Error("kv_append (cuda): row size " + std::to_string(kv_dim) + " is not a multiple of 4");
  const int64_t quads = kv_dim / 4, total = n * quads;
  const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 4096));
  kv_append_kernel<<<blocks, 256, 0, stream>>>(reinterpret_cast<const float4*>(k), reinterpret_cast<const float4*>(v),
                                               positions, n, quads, capacity, reinterpret_cast<uint2*>(k_cache),
                                               reinterpret_cast<uint2*>(v_cache));
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
