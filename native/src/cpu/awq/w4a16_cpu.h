// W4A16 on the CPU: y[n, out] = x[n, in] · Wᵀ where W is AutoAWQ GEMM-packed int4 (awq_pack.h), x and y f32.
// The packed words are read in place (from the checkpoint mapping); dequantization happens inside the dot
// product (GEMV, up to 8 tokens) or per [group × 128-column] tile in a cache-resident buffer (GEMM), never for a
// whole matrix. Load-time extra: only the kernel-order f32 scale table (make_tiled_scales).
//
// Kernels, chosen at run time (MIXQ_CPU_ISA=scalar|avx2 caps the level): AVX-512 (avx512f/bw), AVX2+FMA, and a
// portable scalar one; w4a16_reference (dequantize everything, then a plain f32 matmul) is the oracle the tests
// compare them with.
#pragma once
#include <cstdint>
#include <vector>

namespace mixq {
class ThreadPool;
}

namespace mixq::awq {

enum class W4Isa { Auto, Scalar, Avx2, Avx512 };
const char* w4_isa_name(W4Isa isa);
// The best kernel this CPU runs (Auto resolved).
W4Isa w4_best_isa();
// Every kernel this CPU can run (Scalar first): what the kernel tests iterate over.
std::vector<W4Isa> w4_available_isas();

// How the SIMD GEMV (one token) turns a nibble into f32 (w4a16_cpu.cpp explains both; same results up to f32
// summation order): Convert — AND + int→float convert, fast everywhere; Denormal — AND alone, the masked word read
// as a denormal-range float, ~1.4× the arithmetic rate where FMA takes denormal operands at full speed (AMD Zen 4)
// and ~100× slower where it does not (Intel Xeons measured). Auto: Denormal only where measured fast.
enum class W4Nibble { Auto, Convert, Denormal };
const char* w4_nibble_name(W4Nibble route);
// Measured once per process: FMA with a denormal operand runs within 2× of a normal one.
bool w4_denormal_fma_fast();
// Auto resolved: MIXQ_W4_NIBBLE=convert|denormal if set, else Denormal when w4_denormal_fma_fast().
W4Nibble w4_nibble_route();

constexpr int64_t kW4TileCols = 128;  // 16 packed words: one AVX-512 register of words

struct W4A16Weights {
  int64_t in = 0, out = 0, group = 0;   // out % 8 == 0, in % group == 0
  const int32_t* qweight = nullptr;     // [in, out/8]
  const int32_t* qzeros = nullptr;      // [in/group, out/8]
  // [in/group, out] f32 scales in kernel order (make_tiled_scales): within each full 128-column tile t,
  // entry 128t + 16k + w is column 128t + 8w + kAwqOrder[k] (the column nibble slot k of word w holds), so
  // a vector of slot-k nibbles of 16 words meets its scales contiguously; tail columns stay in natural order.
  const float* scales_tiled = nullptr;
};

// scales16: [groups, out] fp16 (bf16 = false) or bf16 bits. Returns the kernel-order f32 table.
std::vector<float> make_tiled_scales(const uint16_t* scales16, bool bf16, int64_t groups, int64_t out);
// Scale of (group g, column o) from a kernel-order table.
float tiled_scale_at(const float* scales_tiled, int64_t out, int64_t g, int64_t o);

// Dequantized weight, transposed: w_t [in, out] f32 (w_t[i][o] = (q - z) * s). Tests and references only.
void w4a16_dequantize(const W4A16Weights& w, float* w_t);
// Row o of W (that is, column o of w_t): dst [in].
void w4a16_weight_row(const W4A16Weights& w, int64_t o, float* dst);

// Oracle: dequantize all of W, then y = x · w_t in plain loops (f32 accumulation in input order).
void w4a16_reference(const W4A16Weights& w, const float* x, int64_t n, float* y);

// The fast path. n ≤ 8 (decode, short prompt remainders): SIMD GEMV over K-chunks of whole rows (a fixed split by
// shape; each thread streams contiguous rows; outputs summed in chunk order, so results do not depend on the pool
// size; each token's output is the same bits as with n = 1); n > 8: tiled GEMM, multithreaded over column tiles
// and token blocks. `nibble` applies to the SIMD GEMV.
void w4a16_forward(const W4A16Weights& w, const float* x, int64_t n, float* y, ThreadPool& pool,
                   W4Isa isa = W4Isa::Auto, W4Nibble nibble = W4Nibble::Auto);

}  // namespace mixq::awq
