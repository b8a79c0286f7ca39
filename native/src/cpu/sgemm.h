// The CPU backend's f32 GEMM (linear over transposed f32 weights: the quantizer's calibration forward; its GPTQ
// and loss math):
//   Y[n, out] (= or +=) X[n, in] · B[in, out]
// X rows have stride ldx, B rows (input-major, the layout the quantizer keeps weights in: w_t = Wᵀ) stride ldb,
// Y rows stride ldy. AVX-512 micro-kernel (4 rows × 64 columns, K blocked by 256) when the CPU has it,
// otherwise plain loops.
#pragma once
#include <cstdint>

namespace mixq {

class ThreadPool;

void sgemm_st(const float* X, int64_t ldx, const float* B, int64_t ldb, float* Y, int64_t ldy, int64_t n,
              int64_t in, int64_t out, bool accumulate);
// Threaded over row blocks × column blocks.
void sgemm(const float* X, int64_t ldx, const float* B, int64_t ldb, float* Y, int64_t ldy, int64_t n, int64_t in,
           int64_t out, bool accumulate, ThreadPool& pool);

}  // namespace mixq
