// Embedding rows (ops_cuda.h): one block per token, threads stride over the row.
#include "cuda_check.h"
#include "dtype_cuda.cuh"
#include "ops_cuda.h"

namespace mixq::cuda {
namespace {

template <class T>
__global__ void embed_kernel(const T* table, int64_t vocab, int64_t hidden, const int32_t* ids, float* x) {
  const int64_t t = blockIdx.x;
  const int64_t id = min(max(int64_t(ids[t]), int64_t(0)), vocab - 1);  // callers range-check; never read outside
  const T* row = table + id * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = to_float(row[i]);
}

}  // namespace

void launch_embed(const void* table, DType dtype, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n, float* x,
                  cudaStream_t stream) {
  if (n == 0) return;
  const dim3 grid(static_cast<unsigned>(n)), block(256);
  switch (dtype) {
    case DType::BF16: embed_kernel<<<grid, block, 0, stream>>>(static_cast<const __nv_bfloat16*>(table), vocab, hidden, ids, x); break;
    case DType::F16: embed_kernel<<<grid, block, 0, stream>>>(static_cast<const __half*>(table), vocab, hidden, ids, x); break;
    case DType::F32: embed_kernel<<<grid, block, 0, stream>>>(static_cast<const float*>(table), vocab, hidden, ids, x); break;
    default: throw Error(std::string("embed: unsupported table dtype ") + dtype_name(dtype));
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace mixq::cuda
