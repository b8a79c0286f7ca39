// W4A16 GEMV kernel, launcher and guarded entries (gemv_w4a16.h).
//
// Grid (column tiles, split_k, batch); block 256 threads = C columns × KB = 256/C row-runs; a column is W packed
// words (8·W outputs: W = 4 → one 16-byte load per row, W = 2 → 8 bytes). Thread (c, k):
//   1. for each of its runs (R consecutive rows inside one quantization group; runs k, k+KB, ... of the
//      block's row range): load the group's zeros (W words) and scales (8·W fp16) as 4·W + 4·W half2
//      registers (z' = 1024 + z), and the run's R activations;
//   2. for every 4 rows: load the four rows' W words, turn each nibble pair into a half2
//      (bits | 0x6400 → the fp16 1024 + q; AWQ's nibble order makes the pair two adjacent columns),
//      d = (1024 + q) − (1024 + z) exactly, h += d · x in fp16 (4 rows: |h| ≤ 60·|x|);
//      then acc(fp32) += fp16(h · s) — scale once per 4 rows, fp32 across rows;
//   3. block reduction through shared memory, partials added in a fixed order;
//   4. split_k == 1: write y. Otherwise write partials[z][blockIdx.y][·]; the last block of the column tile
//      (ticket from an atomic counter) adds the split_k partials in order 0..split_k−1, writes y and resets
//      the counter for the next call. Fixed orders everywhere: bitwise deterministic.
// Limits: G ∈ {32, 64, 128}, R ≤ G, in % G == 0, out % 32 == 0, 16-byte aligned pointers, split_k ≤ 64,
// batch ≤ 8.
//
// Measured alternatives that lost (H100, 2026-11-24, docs/BENCHMARKS.md): plain loads without the L2 hint
// (+4–9%), all R rows of a run loaded into registers before any arithmetic (one block per SM: +15% at Mixtral
// shapes), a per-thread cp.async ring through shared memory (+20%), column tiles of 16/32 words so a warp
// reads 512 contiguous bytes (+6–30%: they need split-K). ncu at Mixtral w1: DRAM bytes = the minimum
// (30.6 MB), 20% warps active, ~3.6 instructions per weight; the kernel is latency/issue-bound at ~72% of
// the copy rate, and batching problems into one launch does not change that rate.
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_check.h"
#include "device_guard.h"
#include "gemv_w4a16.h"

namespace mixq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxSplitK = 64;
constexpr int kRowsPerFlush = 4;  // fp16 accumulation length before the fp32 flush (overflow bound above)

struct Batch {
  GemvW4A16Problem p[kGemvMaxBatch];
};

// Where the problems' pointers come from: scalar parameters (one problem), the Batch (blockIdx.z), or the routes
// (blockIdx.z = matrix · slots + slot, the expert read from the device).
// The F32x modes read x as f32 and round it to f16 in registers (exactly as launch_f32_to_f16 would): no separate
// conversion kernel before a decode step's GEMV.
enum Mode : int { kOne = 0, kBatched = 1, kRouted = 2, kOneF32x = 3, kRoutedF32x = 4 };

// Two nibbles (bits 4p..4p+3 and 16+4p..16+4p+3) of `word` as the half2 (1024 + lo, 1024 + hi).
__device__ __forceinline__ half2 nibble_pair_plus_1024(uint32_t word, int p) {
  const uint32_t bits = ((word >> (4 * p)) & 0x000F000Fu) | 0x64006400u;
  return *reinterpret_cast<const half2*>(&bits);
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

template <class OutT>
__device__ __forceinline__ void store_out(void* y, int i, float v);
template <>
__device__ __forceinline__ void store_out<float>(void* y, int i, float v) { static_cast<float*>(y)[i] = v; }
template <>
__device__ __forceinline__ void store_out<__half>(void* y, int i, float v) {
  static_cast<__half*>(y)[i] = __float2half_rn(v);
}

// W packed words per thread per row: uint4 (32 outputs) or uint2 (16 outputs, fewer registers → more warps).
template <int W>
struct WordsOf;
template <>
struct WordsOf<4> {
  using type = uint4;
};
template <>
struct WordsOf<2> {
  using type = uint2;
};

__device__ __forceinline__ uint32_t word_of(const uint2& v, int q) { return q == 0 ? v.x : v.y; }

// Weight loads: ld.global.nc with L1::no_allocate (streamed once) and the L2::256B prefetch hint, so one
// request brings the neighbouring column tiles' bytes of the same row into L2 for the blocks next door
// (measured 4–9% faster than plain 16-byte loads at every shape of the sweep).
__device__ __forceinline__ uint4 load_weights(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 load_weights(const uint2* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// kBatched: the problem's pointers come from `batch` (indexed by blockIdx.z); otherwise from the scalar
// parameters, which the compiler uses straight from the constant bank — measured faster for one problem
// (the batched form holds 10 more registers and spilled at R = 32).
template <int C, int R, int W, int kMode, class OutT>
__global__ void __launch_bounds__(kThreads, W == 2 ? 3 : 2)  // W = 2: ≤ 85 registers, three blocks per SM
    gemv_w4a16_kernel(const Batch batch, const GemvW4A16Routes routes,
                      const void* __restrict__ x_one,           // [in] f16 (f32: F32x modes)
                      const int32_t* __restrict__ qweight_one,  // [in][out/8]
                      const int32_t* __restrict__ qzeros_one,   // [in/G][out/8]
                      const __half* __restrict__ scales_one,    // [in/G][out]
                      void* __restrict__ y_one,                 // [out]
                      float* __restrict__ partials,             // [batch][kMaxSplitK][out] (split_k > 1)
                      unsigned* __restrict__ tile_counters,     // [batch][out/32 + 1]      (split_k > 1)
                      int in, int out, int group_size, int rows_per_split) {
  using Vec = typename WordsOf<W>::type;
  constexpr int KB = kThreads / C;
  constexpr int kOut = 8 * W;  // outputs per thread
  constexpr bool kRoutes = kMode == kRouted || kMode == kRoutedF32x;
  constexpr bool kXF32 = kMode == kOneF32x || kMode == kRoutedF32x;
  const void* x = x_one;
  const int32_t* qweight_words = qweight_one;
  const int32_t* qzeros_words = qzeros_one;
  const __half* scales = scales_one;
  void* y = y_one;
  float y_scale = 1.0f;
  if constexpr (kMode == kBatched) {
    const GemvW4A16Problem& p = batch.p[blockIdx.z];
    x = p.x, qweight_words = p.qweight, qzeros_words = p.qzeros, scales = p.scales, y = p.y;
  }
  if constexpr (kRoutes) {
    const int matrix = blockIdx.z / routes.slots, slot = blockIdx.z % routes.slots;
    const int e = routes.expert_of[slot];
    if (e < 0 || e >= routes.num_experts) return;  // a masked or foreign id: no expert to run
    const AwqMatrix m = routes.table[e].w[routes.first_matrix + matrix];
    if (!m.qweight) return;  // an expert this device does not hold: its slot is left as it is
    x = static_cast<const char*>(routes.x) + static_cast<size_t>(slot / routes.x_row_div) * in * (kXF32 ? 4 : 2);
    qweight_words = m.qweight, qzeros_words = m.qzeros, scales = m.scales;
    y = static_cast<char*>(routes.y) + (static_cast<size_t>(blockIdx.z) * out) * (sizeof(OutT));
    if (routes.y_scale) y_scale = routes.y_scale[slot];
  }
  const Vec* __restrict__ qweight = reinterpret_cast<const Vec*>(qweight_words);
  const Vec* __restrict__ qzeros = reinterpret_cast<const Vec*>(qzeros_words);
  const int cols = out / kOut;  // Vec columns per row
  const int c_local = threadIdx.x % C, k_lane = threadIdx.x / C;
  const int col = blockIdx.x * C + c_local;
  const int k_begin = blockIdx.y * rows_per_split;
  const int k_end = min(in, k_begin + rows_per_split);

  float acc[kOut];
#pragma unroll
  for (int i = 0; i < kOut; ++i) acc[i] = 0.0f;

  if (col < cols) {
    for (int r0 = k_begin + k_lane * R; r0 < k_end; r0 += KB * R) {
      const Vec* wp = qweight + static_cast<size_t>(r0) * cols + col;
      const int g = r0 / group_size;
      const Vec zq = qzeros[static_cast<size_t>(g) * cols + col];
      half2 zero[4 * W];  // 1024 + z for output pairs (2i, 2i+1)
#pragma unroll
      for (int q = 0; q < W; ++q)
#pragma unroll
        for (int p = 0; p < 4; ++p) zero[q * 4 + p] = nibble_pair_plus_1024(word_of(zq, q), p);
      const uint4* sp = reinterpret_cast<const uint4*>(scales + static_cast<size_t>(g) * out + col * kOut);
      half2 scale[4 * W];
#pragma unroll
      for (int v = 0; v < W; ++v) {  // kOut fp16 scales = W uint4
        const uint4 s4 = sp[v];
        const half2* h = reinterpret_cast<const half2*>(&s4);
#pragma unroll
        for (int j = 0; j < 4; ++j) scale[v * 4 + j] = h[j];
      }
      uint4 xv[R / 8];  // the run's R activations, 8 fp16 per uint4
#pragma unroll
      for (int v = 0; v < R / 8; ++v) {
        if constexpr (kXF32) {
          const float4* xf = reinterpret_cast<const float4*>(static_cast<const float*>(x) + r0) + 2 * v;
          const float4 a = xf[0], b = xf[1];
          const half2 h[4] = {__floats2half2_rn(a.x, a.y), __floats2half2_rn(a.z, a.w), __floats2half2_rn(b.x, b.y),
                              __floats2half2_rn(b.z, b.w)};
          xv[v] = *reinterpret_cast<const uint4*>(h);
        } else {
          xv[v] = reinterpret_cast<const uint4*>(static_cast<const __half*>(x) + r0)[v];
        }
      }
      const __half* xh = reinterpret_cast<const __half*>(xv);

#pragma unroll
      for (int sub = 0; sub < R; sub += kRowsPerFlush) {
        Vec w[kRowsPerFlush];
#pragma unroll
        for (int j = 0; j < kRowsPerFlush; ++j) w[j] = load_weights(wp + static_cast<size_t>(sub + j) * cols);
        half2 h[4 * W];
#pragma unroll
        for (int i = 0; i < 4 * W; ++i) h[i] = __float2half2_rn(0.0f);
#pragma unroll
        for (int j = 0; j < kRowsPerFlush; ++j) {
          const half2 x2 = __half2half2(xh[sub + j]);
#pragma unroll
          for (int q = 0; q < W; ++q)
#pragma unroll
            for (int p = 0; p < 4; ++p) {
              const half2 d = __hsub2(nibble_pair_plus_1024(word_of(w[j], q), p), zero[q * 4 + p]);
              h[q * 4 + p] = __hfma2(d, x2, h[q * 4 + p]);
            }
        }
#pragma unroll
        for (int i = 0; i < 4 * W; ++i) {
          const float2 f = __half22float2(__hmul2(h[i], scale[i]));
          acc[2 * i] += f.x;
          acc[2 * i + 1] += f.y;
        }
      }
    }
  }

  // 3. block reduction: red[k_lane][c_local][kOut + 1] (odd stride: a warp's stores for one i hit 32 banks).
  // Partials are added in a fixed order (staggered by 4 per part so that parts read different banks), parts
  // combined by xor shuffles.
  constexpr int kStride = kOut + 1;
  __shared__ float red[KB * C * kStride];
  float* mine = red + (k_lane * C + c_local) * kStride;
#pragma unroll
  for (int i = 0; i < kOut; ++i) mine[i] = acc[i];
  __syncthreads();

  // Block outputs C·kOut: P threads per output when fewer than 256, else Q outputs per thread.
  constexpr int kBlockOut = C * kOut;
  constexpr int P = kBlockOut < kThreads ? kThreads / kBlockOut : 1;
  constexpr int Q = kBlockOut > kThreads ? kBlockOut / kThreads : 1;
  constexpr int kSumLen = KB / P;
  const int part = threadIdx.x % P;
  float sums[Q];
  int outs[Q];
#pragma unroll
  for (int q = 0; q < Q; ++q) {
    const int o_local = threadIdx.x / P + q * (kThreads / P);
    const int c = o_local / kOut, i = o_local % kOut;
    float sum = 0.0f;
#pragma unroll 8
    for (int kk = 0; kk < kSumLen; ++kk) {
      const int k = part * kSumLen + ((kk + 4 * part) % kSumLen);
      sum += red[(k * C + c) * kStride + i];
    }
#pragma unroll
    for (int off = 1; off < P; off <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    sums[q] = sum;
    outs[q] = part == 0 ? blockIdx.x * kBlockOut + o_local : out;  // `out` marks "not mine to write"
  }
  if (gridDim.y == 1) {
#pragma unroll
    for (int q = 0; q < Q; ++q)
      if (outs[q] < out) store_out<OutT>(y, outs[q], y_scale * sums[q]);
    return;
  }

  // 4. split-K: publish this block's partial, the last block of the tile reduces in order.
  float* my_partials = partials + static_cast<size_t>(blockIdx.z) * kMaxSplitK * out;
  unsigned* counter = tile_counters + static_cast<size_t>(blockIdx.z) * (out / 16 + 1) + blockIdx.x;
#pragma unroll
  for (int q = 0; q < Q; ++q)
    if (outs[q] < out) my_partials[static_cast<size_t>(blockIdx.y) * out + outs[q]] = sums[q];
  __threadfence();
  __syncthreads();
  __shared__ bool is_last;
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1u) == gridDim.y - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
#pragma unroll
  for (int q = 0; q < Q; ++q) {
    if (outs[q] >= out) continue;
    float total = 0.0f;
    for (int s = 0; s < static_cast<int>(gridDim.y); ++s)
      total += __ldcg(&my_partials[static_cast<size_t>(s) * out + outs[q]]);
    store_out<OutT>(y, outs[q], y_scale * total);
  }
  if (threadIdx.x == 0) *counter = 0;
}

using KernelPtr = void (*)(const Batch, const GemvW4A16Routes, const void*, const int32_t*, const int32_t*, const __half*, void*, float*,
                           unsigned*, int, int, int, int);

template <class OutT, int kMode, int W>
KernelPtr pick_shape(int C, int R) {
  if (R == 16) {
    if (C == 2) return gemv_w4a16_kernel<2, 16, W, kMode, OutT>;
    if (C == 4) return gemv_w4a16_kernel<4, 16, W, kMode, OutT>;
    if (C == 8) return gemv_w4a16_kernel<8, 16, W, kMode, OutT>;
  }
  if constexpr (W == 4) {  // W = 2 with R = 32 never won the sweep: not built
    if (R == 32) {
      if (C == 2) return gemv_w4a16_kernel<2, 32, W, kMode, OutT>;
      if (C == 4) return gemv_w4a16_kernel<4, 32, W, kMode, OutT>;
      if (C == 8) return gemv_w4a16_kernel<8, 32, W, kMode, OutT>;
    }
  }
  return nullptr;
}

template <class OutT, int W>
KernelPtr pick_mode(int C, int R, Mode mode) {
  switch (mode) {
    case kOne: return pick_shape<OutT, kOne, W>(C, R);
    case kBatched: return pick_shape<OutT, kBatched, W>(C, R);
    case kRouted:  // f32 outputs only (the MoE's gate/up and slots; decode linears)
    case kOneF32x:
    case kRoutedF32x:
      if constexpr (std::is_same_v<OutT, float>) {
        if (mode == kRouted) return pick_shape<OutT, kRouted, W>(C, R);
        if (mode == kOneF32x) return pick_shape<OutT, kOneF32x, W>(C, R);
        return pick_shape<OutT, kRoutedF32x, W>(C, R);
      }
      return nullptr;
  }
  return nullptr;
}

template <class OutT>
KernelPtr pick_typed(const GemvW4A16Config& cfg, Mode mode) {
  const int C = cfg.cols_per_block, R = cfg.rows_per_run;
  if (cfg.words_per_thread == 4) return pick_mode<OutT, 4>(C, R, mode);
  if (cfg.words_per_thread == 2) return pick_mode<OutT, 2>(C, R, mode);
  return nullptr;
}

KernelPtr pick_kernel(const GemvW4A16Config& cfg, DType y_dtype, Mode mode) {
  KernelPtr k = nullptr;
  if (y_dtype == DType::F16) k = pick_typed<__half>(cfg, mode);
  if (y_dtype == DType::F32) k = pick_typed<float>(cfg, mode);
  if (!k)
    throw Error("gemv_w4a16: unsupported config cols_per_block=" + std::to_string(cfg.cols_per_block) +
                " rows_per_run=" + std::to_string(cfg.rows_per_run) + " words_per_thread=" +
                std::to_string(cfg.words_per_thread) + " (C ∈ {2,4,8}, R ∈ {16,32}, W ∈ {2,4}, W = 2 only with R = 16, y f16 or f32)");
  return k;
}

struct Plan {
  int tiles, split_k, rows_per_split;
};

// Effective split: at most kMaxSplitK, at most one split per run, rows per split a multiple of R.
Plan make_plan(int64_t in, int64_t out, const GemvW4A16Config& cfg) {
  const int64_t cols = out / (8 * cfg.words_per_thread);
  const int64_t runs = in / cfg.rows_per_run;
  int split = std::max(1, std::min<int>(cfg.split_k, kMaxSplitK));
  split = static_cast<int>(std::min<int64_t>(split, runs));
  const int64_t runs_per_split = (runs + split - 1) / split;
  const int rows_per_split = static_cast<int>(runs_per_split * cfg.rows_per_run);
  split = static_cast<int>((in + rows_per_split - 1) / rows_per_split);  // drop empty splits
  return Plan{static_cast<int>((cols + cfg.cols_per_block - 1) / cfg.cols_per_block), split, rows_per_split};
}

// Blocks of this kernel resident per SM and the SM count, per device (cached: the queries cost microseconds).
std::pair<int, int> occupancy(int device, const GemvW4A16Config& cfg) {
  static std::mutex mu;
  static std::map<std::tuple<int, int, int, int>, std::pair<int, int>> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(device, cfg.cols_per_block, cfg.rows_per_run, cfg.words_per_thread);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int sms = 0, blocks = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DeviceGuard guard(device);
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, pick_kernel(cfg, DType::F16, kOne), kThreads, 0));
  return cache[key] = {std::max(1, blocks), sms};
}

void check_problem(const std::string& op, const GemvW4A16Problem& p, int index) {
  const std::string where = index >= 0 ? " (problem " + std::to_string(index) + ")" : "";
  for (auto [ptr, name] : {std::pair<const void*, const char*>{p.x, "x"}, {p.qweight, "qweight"},
                           {p.qzeros, "qzeros"}, {p.scales, "scales"}, {p.y, "y"}})
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      throw Error(op + ": tensor '" + name + "'" + where + " is not 16-byte aligned");
}

}  // namespace

GemvW4A16Config gemv_w4a16_default_config(int64_t in, int64_t out, int group_size, int device, int batch) {
  // Fitted to the sweep (cuda_bench, H100, 2026-11-24): one wave of two resident blocks per SM; Mixtral-size
  // matrices take 32-row runs and 32 outputs per thread, smaller ones 16-row runs and 16 outputs per thread
  // (more warps: +3–9% there, −12% at Mixtral size); wide outputs take narrow tiles (C = 2) and no split,
  // narrow outputs wide tiles (C = 8) split along `in`, up to half-idle threads (more blocks beat fuller
  // blocks there).
  GemvW4A16Config cfg;
  const bool large = in * out >= (int64_t{1} << 25) && group_size >= 32;
  cfg.rows_per_run = large ? 32 : 16;
  cfg.words_per_thread = large ? 4 : 2;
  const int64_t cols = out / (8 * cfg.words_per_thread);
  const auto [blocks_per_sm, sms] = occupancy(device, cfg);
  const int64_t wave = int64_t{std::min(blocks_per_sm, 2)} * sms;
  cfg.cols_per_block = (cols / 2) * batch * 4 >= wave * 3 ? 2 : 8;
  const int64_t tiles = (cols + cfg.cols_per_block - 1) / cfg.cols_per_block * batch;
  const int64_t runs = in / cfg.rows_per_run;
  const int64_t half_kb = kThreads / cfg.cols_per_block / 2;
  const int64_t max_split = std::max<int64_t>(1, std::min<int64_t>(kMaxSplitK, runs / half_kb));
  cfg.split_k = static_cast<int>(std::clamp<int64_t>(wave / std::max<int64_t>(tiles, 1), 1, max_split));
  return cfg;
}

size_t gemv_w4a16_workspace_bytes(int64_t out, int batch) {
  const size_t partial_bytes = size_t(kMaxSplitK) * out * sizeof(float);
  const size_t counter_bytes = size_t(out / 16 + 1) * sizeof(unsigned);  // ≥ column tiles of any config
  return size_t(batch) * (partial_bytes + counter_bytes);
}

void launch_gemv_w4a16(const GemvW4A16Problem* problems, int count, DType y_dtype, int64_t in, int64_t out,
                       int group_size, void* workspace, const GemvW4A16Config& cfg, cudaStream_t stream) {
  if (count < 1 || count > kGemvMaxBatch)  // the one check kept here: it guards a host-side array
    throw Error("gemv_w4a16: batch of " + std::to_string(count) + " problems, need 1.." + std::to_string(kGemvMaxBatch));
  const Plan plan = make_plan(in, out, cfg);
  Batch batch{};
  for (int i = 0; i < count; ++i) batch.p[i] = problems[i];
  float* partials = static_cast<float*>(workspace);
  unsigned* counters = reinterpret_cast<unsigned*>(static_cast<char*>(workspace) +
                                                   size_t(count) * kMaxSplitK * out * sizeof(float));
  const dim3 grid(plan.tiles, plan.split_k, count);
  const GemvW4A16Problem& p0 = problems[0];
  pick_kernel(cfg, y_dtype, count > 1 ? kBatched : kOne)<<<grid, kThreads, 0, stream>>>(
      batch, GemvW4A16Routes{}, p0.x, p0.qweight, p0.qzeros, p0.scales, p0.y, partials, counters, static_cast<int>(in), static_cast<int>(out), group_size, plan.rows_per_split);
  CUDA_CHECK_LAUNCH();
}

void launch_gemv_w4a16_routed(const GemvW4A16Routes& routes, int matrices, DType y_dtype, int64_t in, int64_t out,
                              int group_size, void* workspace, const GemvW4A16Config& cfg, cudaStream_t stream) {
  const int count = matrices * routes.slots;
  if (matrices < 1 || routes.slots < 1 || count > kGemvMaxRoutedProblems)
    throw Error("gemv_w4a16 routed: " + std::to_string(matrices) + " matrices × " + std::to_string(routes.slots) +
                " slots, need 1.." + std::to_string(kGemvMaxRoutedProblems) + " problems");
  const Plan plan = make_plan(in, out, cfg);
  float* partials = static_cast<float*>(workspace);
  unsigned* counters = reinterpret_cast<unsigned*>(static_cast<char*>(workspace) +
                                                   size_t(count) * kMaxSplitK * out * sizeof(float));
  const dim3 grid(plan.tiles, plan.split_k, count);
  pick_kernel(cfg, y_dtype, routes.x_f32 ? kRoutedF32x : kRouted)<<<grid, kThreads, 0, stream>>>(
      Batch{}, routes, nullptr, nullptr, nullptr, nullptr, nullptr, partials, counters, static_cast<int>(in),
      static_cast<int>(out), group_size, plan.rows_per_split);
  CUDA_CHECK_LAUNCH();
}

void launch_gemv_w4a16_f32x(const float* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales,
                            float* y, int64_t in, int64_t out, int group_size, void* workspace,
                            const GemvW4A16Config& cfg, cudaStream_t stream) {
  const Plan plan = make_plan(in, out, cfg);
  float* partials = static_cast<float*>(workspace);
  unsigned* counters = reinterpret_cast<unsigned*>(static_cast<char*>(workspace) + size_t(kMaxSplitK) * out * sizeof(float));
  const dim3 grid(plan.tiles, plan.split_k, 1);
  pick_kernel(cfg, DType::F32, kOneF32x)<<<grid, kThreads, 0, stream>>>(
      Batch{}, GemvW4A16Routes{}, x, qweight, qzeros, scales, y, partials, counters, static_cast<int>(in),
      static_cast<int>(out), group_size, plan.rows_per_split);
  CUDA_CHECK_LAUNCH();
}

void gemv_w4a16_batched(const GemvW4A16Problem* problems, int count, DType y_dtype, int64_t in, int64_t out,
                        int group_size, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                        const GemvW4A16Config* config) {
  const std::string op = "gemv_w4a16";
  const std::string shape = " (in=" + std::to_string(in) + ", out=" + std::to_string(out) +
                            ", group=" + std::to_string(group_size) + ")";
  if (count < 1 || count > kGemvMaxBatch)
    throw Error(op + ": batch of " + std::to_string(count) + " problems, need 1.." + std::to_string(kGemvMaxBatch));
  if (group_size != 32 && group_size != 64 && group_size != 128)
    throw Error(op + ": group size must be 32, 64 or 128" + shape);
  if (in <= 0 || out <= 0 || in % group_size != 0 || out % 32 != 0)
    throw Error(op + ": need in % group == 0 and out % 32 == 0" + shape);
  if (in >= (int64_t{1} << 30) || out >= (int64_t{1} << 30)) throw Error(op + ": shape too large" + shape);
  if (y_dtype != DType::F16 && y_dtype != DType::F32) throw Error(op + ": y dtype must be f16 or f32");
  for (int i = 0; i < count; ++i) check_problem(op, problems[i], count > 1 ? i : -1);
  if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0) throw Error(op + ": workspace is not 16-byte aligned");
  if (workspace_bytes < gemv_w4a16_workspace_bytes(out, count))
    throw Error(op + ": workspace of " + std::to_string(workspace_bytes) + " bytes, need " +
                std::to_string(gemv_w4a16_workspace_bytes(out, count)) + shape);
  // Wrong-device check: every tensor of every problem and the workspace on the workspace's GPU.
  const int device = device_of_tensors(op.c_str(), {{workspace, "workspace"}});
  for (int i = 0; i < count; ++i) {
    const GemvW4A16Problem& p = problems[i];
    const std::string who = count > 1 ? op + " (problem " + std::to_string(i) + ")" : op;
    const int d = device_of_tensors(who.c_str(), {{p.x, "x"}, {p.qweight, "qweight"}, {p.qzeros, "qzeros"},
                                                  {p.scales, "scales"}, {p.y, "y"}});
    if (d != device)
      throw Error(op + ": problem " + std::to_string(i) + "'s tensors live on " + device_name(d) +
                  " but the workspace lives on " + device_name(device));
  }
  DeviceGuard guard(device);
  check_stream_device(op.c_str(), stream, device);
  const GemvW4A16Config cfg = config ? *config : gemv_w4a16_default_config(in, out, group_size, device, count);
  if (cfg.rows_per_run > group_size)
    throw Error(op + ": rows_per_run " + std::to_string(cfg.rows_per_run) + " exceeds the group size" + shape);
  launch_gemv_w4a16(problems, count, y_dtype, in, out, group_size, workspace, cfg, stream);
}

void gemv_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, void* y,
                DType y_dtype, int64_t in, int64_t out, int group_size, void* workspace, size_t workspace_bytes,
                cudaStream_t stream, const GemvW4A16Config* config) {
  const GemvW4A16Problem p{x, qweight, qzeros, scales, y};
  gemv_w4a16_batched(&p, 1, y_dtype, in, out, group_size, workspace, workspace_bytes, stream, config);
}

}  // namespace mixq::cuda
