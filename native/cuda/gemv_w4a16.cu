// W4A16 GEMV kernel, launcher and guarded entry (gemv_w4a16.h).
//
// Grid (column tiles, split_k); block 256 threads = C columns × KB = 256/C row-runs. Thread (c, k):
//   1. for each of its runs (R consecutive rows inside one quantization group, runs k, k+KB, ... of the
//      block's row range): load the group's zeros (one uint4 = 32 nibbles) and scales (32 fp16), keep both as
//      8 + 16 half2 registers (z' = 1024 + z);
//   2. for every 4 rows: load the four 16-byte qweight words, turn each nibble pair into a half2
//      (bits | 0x6400 → the fp16 1024 + q; AWQ's nibble order makes the pair two adjacent columns),
//      d = (1024 + q) − (1024 + z) exactly, h += d · x in fp16 (4 rows: |h| ≤ 60·|x|);
//      then acc(fp32) += fp16(h · s) — scale once per 4 rows, fp32 across rows;
//   3. block reduction through shared memory in a fixed order (KB partials per output);
//   4. split_k == 1: write y. Otherwise write partials[blockIdx.y][·], and the last block of the column tile
//      (ticket from an atomic counter) adds the split_k partials in order 0..split_k−1 and writes y,
//      then resets the counter for the next call. Fixed orders everywhere: bitwise deterministic.
// Limits: G ∈ {32, 64, 128}, R ≤ G, in % G == 0, out % 32 == 0, 16-byte aligned pointers, split_k ≤ 64.
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "cuda_check.h"
#include "device_guard.h"
#include "gemv_w4a16.h"

namespace mixq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxSplitK = 64;
constexpr int kRowsPerFlush = 4;  // fp16 accumulation length before the fp32 flush (overflow bound above)

// Two nibbles (bits 4p..4p+3 and 16+4p..16+4p+3) of `word` as the half2 (1024 + lo, 1024 + hi).
__device__ __forceinline__ half2 nibble_pair_plus_1024(uint32_t word, int p) {
  const uint32_t bits = ((word >> (4 * p)) & 0x000F000Fu) | 0x64006400u;
  return *reinterpret_cast<const half2*>(&bits);
}

template <class OutT>
__device__ __forceinline__ void store_out(OutT* y, int i, float v);
template <>
__device__ __forceinline__ void store_out<float>(float* y, int i, float v) { y[i] = v; }
template <>
__device__ __forceinline__ void store_out<__half>(__half* y, int i, float v) { y[i] = __float2half_rn(v); }

__device__ __forceinline__ uint32_t word_of(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// Weight loads. kHint: ld.global.nc with L1::no_allocate (streamed once) and the L2::256B prefetch hint, so
// one request brings the neighbouring column tiles' bytes of the same row into L2 for the blocks next door.
template <bool kHint>
__device__ __forceinline__ uint4 load_weights(const uint4* p) {
  if constexpr (kHint) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
  } else {
    return *p;
  }
}

// cp.async (sm_80+): a 16-byte global→shared copy that needs no register, completing in commit groups.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src) : "memory");
#else
  *static_cast<uint4*>(smem_dst) = *static_cast<const uint4*>(gmem_src);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int kPending>  // wait until at most kPending commit groups of this thread are still in flight
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Flavour 3 staging: each thread streams its own weight rows through a private ring of kStages slots of
// kStageRows rows in shared memory (no barrier needed: no thread reads another's slots), keeping
// (kStages − 1)·kStageRows·16 bytes per thread in flight without holding them in registers.
constexpr int kStageRows = 2, kStages = 5;

// Flavours (measured against each other by cuda_bench): 0 plain loads; 1 hinted loads; 2 hinted loads with all
// R rows of a run issued before the zeros/scales/x loads and any arithmetic (more bytes in flight per thread,
// at the price of 64 more registers: one 256-thread block per SM); 3 cp.async pipeline through shared memory.
template <int C, int R, int kFlavor, class OutT>
__global__ void __launch_bounds__(kThreads, kFlavor == 2 ? 1 : 2)
    gemv_w4a16_kernel(const __half* __restrict__ x,       // [in]
                      const uint4* __restrict__ qweight,  // [in][cols]   (cols = out/32 uint4 per row)
                      const uint4* __restrict__ qzeros,   // [in/G][cols]
                      const __half* __restrict__ scales,  // [in/G][out]
                      OutT* __restrict__ y,               // [out]
                      float* __restrict__ partials,       // [split_k][out] (split_k > 1)
                      unsigned* __restrict__ tile_counters,  // [gridDim.x] (split_k > 1)
                      int in, int out, int group_size, int rows_per_split) {
  constexpr int KB = kThreads / C;
  constexpr bool kHint = kFlavor >= 1;
  constexpr bool kPrefetch = kFlavor == 2;
  const int cols = out / 32;
  const int c_local = threadIdx.x % C, k_lane = threadIdx.x / C;
  const int col = blockIdx.x * C + c_local;
  const int k_begin = blockIdx.y * rows_per_split;
  const int k_end = min(in, k_begin + rows_per_split);

  float acc[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) acc[i] = 0.0f;

  constexpr int kRedBytes = KB * C * 33 * 4;
  constexpr int kStageBytes = kFlavor == 3 ? kStages * kStageRows * kThreads * 16 : 0;
  __shared__ __align__(16) unsigned char smem[kRedBytes > kStageBytes ? kRedBytes : kStageBytes];

  if constexpr (kFlavor == 3) {
    uint4* stage = reinterpret_cast<uint4*>(smem);  // [kStages][kStageRows][kThreads]
    constexpr int kChunksPerRun = R / kStageRows;
    const int first_row = k_begin + k_lane * R;
    const int runs_here = (col < cols && first_row < k_end) ? (k_end - first_row + KB * R - 1) / (KB * R) : 0;
    const int chunks = runs_here * kChunksPerRun;
    auto row_of = [&](int c) {
      return first_row + (c / kChunksPerRun) * KB * R + (c % kChunksPerRun) * kStageRows;
    };
    auto issue = [&](int c) {
      if (c < chunks) {
        const uint4* src = qweight + static_cast<size_t>(row_of(c)) * cols + col;
        uint4* dst = stage + (c % kStages) * kStageRows * kThreads + threadIdx.x;
#pragma unroll
        for (int j = 0; j < kStageRows; ++j) cp_async16(dst + j * kThreads, src + static_cast<size_t>(j) * cols);
      }
      cp_async_commit();  // also when empty: group counting stays uniform
    };
#pragma unroll
    for (int c = 0; c < kStages - 1; ++c) issue(c);
    half2 zero[16], scale[16], h[16];
    for (int c = 0; c < chunks; ++c) {
      const int row = row_of(c);
      const int sub = (c % kChunksPerRun) * kStageRows;  // row offset inside the run
      if (sub == 0) {
        const int g = row / group_size;
        const uint4 zq = qzeros[static_cast<size_t>(g) * cols + col];
#pragma unroll
        for (int q = 0; q < 4; ++q)
#pragma unroll
          for (int p = 0; p < 4; ++p) zero[q * 4 + p] = nibble_pair_plus_1024(word_of(zq, q), p);
        const uint4* sp = reinterpret_cast<const uint4*>(scales + static_cast<size_t>(g) * out + col * 32);
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const uint4 s4 = sp[v];
          const half2* hp = reinterpret_cast<const half2*>(&s4);
#pragma unroll
          for (int j = 0; j < 4; ++j) scale[v * 4 + j] = hp[j];
        }
      }
      const half2 x01 = *reinterpret_cast<const half2*>(x + row);  // kStageRows == 2 activations
      if (sub % kRowsPerFlush == 0) {
#pragma unroll
        for (int i = 0; i < 16; ++i) h[i] = __float2half2_rn(0.0f);
      }
      cp_async_wait<kStages - 2>();  // chunk c has landed
      uint4 w[kStageRows];
#pragma unroll
      for (int j = 0; j < kStageRows; ++j) w[j] = stage[((c % kStages) * kStageRows + j) * kThreads + threadIdx.x];
      issue(c + kStages - 1);  // refills the slot read one iteration ago
#pragma unroll
      for (int j = 0; j < kStageRows; ++j) {
        const half2 x2 = j == 0 ? __low2half2(x01) : __high2half2(x01);
#pragma unroll
        for (int q = 0; q < 4; ++q)
#pragma unroll
          for (int p = 0; p < 4; ++p) {
            const half2 d = __hsub2(nibble_pair_plus_1024(word_of(w[j], q), p), zero[q * 4 + p]);
            h[q * 4 + p] = __hfma2(d, x2, h[q * 4 + p]);
          }
      }
      if ((sub + kStageRows) % kRowsPerFlush == 0) {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const float2 f = __half22float2(__hmul2(h[i], scale[i]));
          acc[2 * i] += f.x;
          acc[2 * i + 1] += f.y;
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the reduction below reuses the staging memory
  } else if (col < cols) {
    for (int r0 = k_begin + k_lane * R; r0 < k_end; r0 += KB * R) {
      const uint4* wp = qweight + static_cast<size_t>(r0) * cols + col;
      uint4 w_all[kPrefetch ? R : 1];
      if constexpr (kPrefetch) {
#pragma unroll
        for (int j = 0; j < R; ++j) w_all[j] = load_weights<true>(wp + static_cast<size_t>(j) * cols);
      }
      const int g = r0 / group_size;
      const uint4 zq = qzeros[static_cast<size_t>(g) * cols + col];
      half2 zero[16];  // 1024 + z for output pairs (2i, 2i+1)
#pragma unroll
      for (int q = 0; q < 4; ++q)
#pragma unroll
        for (int p = 0; p < 4; ++p) zero[q * 4 + p] = nibble_pair_plus_1024(word_of(zq, q), p);
      const uint4* sp = reinterpret_cast<const uint4*>(scales + static_cast<size_t>(g) * out + col * 32);
      half2 scale[16];
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const uint4 s4 = sp[v];
        const half2* h = reinterpret_cast<const half2*>(&s4);
#pragma unroll
        for (int j = 0; j < 4; ++j) scale[v * 4 + j] = h[j];
      }
      uint4 xv[R / 8];  // the run's R activations, 8 fp16 per uint4
#pragma unroll
      for (int v = 0; v < R / 8; ++v) xv[v] = reinterpret_cast<const uint4*>(x + r0)[v];
      const __half* xh = reinterpret_cast<const __half*>(xv);

#pragma unroll
      for (int sub = 0; sub < R; sub += kRowsPerFlush) {
        uint4 w[kRowsPerFlush];
#pragma unroll
        for (int j = 0; j < kRowsPerFlush; ++j)
          w[j] = kPrefetch ? w_all[kPrefetch ? sub + j : 0]
                           : load_weights<kHint>(wp + static_cast<size_t>(sub + j) * cols);
        half2 h[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) h[i] = __float2half2_rn(0.0f);
#pragma unroll
        for (int j = 0; j < kRowsPerFlush; ++j) {
          const half2 x2 = __half2half2(xh[sub + j]);
#pragma unroll
          for (int q = 0; q < 4; ++q)
#pragma unroll
            for (int p = 0; p < 4; ++p) {
              const half2 d = __hsub2(nibble_pair_plus_1024(word_of(w[j], q), p), zero[q * 4 + p]);
              h[q * 4 + p] = __hfma2(d, x2, h[q * 4 + p]);
            }
        }
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const float2 f = __half22float2(__hmul2(h[i], scale[i]));
          acc[2 * i] += f.x;
          acc[2 * i + 1] += f.y;
        }
      }
    }
  }

  // 3. block reduction: red[k_lane][c_local][33] (33: a warp's stores for one i hit 32 different banks).
  // P = 8/C threads per output each add 32 of the KB partials (staggered by 4 per part so the P parts read
  // different banks), then combine by xor shuffles: a fixed order, so the result is deterministic.
  float* red = reinterpret_cast<float*>(smem);
  float* mine = red + (k_lane * C + c_local) * 33;
#pragma unroll
  for (int i = 0; i < 32; ++i) mine[i] = acc[i];
  __syncthreads();

  constexpr int P = 8 / C;  // KB / P == 32
  const int o_local = threadIdx.x / P, part = threadIdx.x % P;
  const int o = blockIdx.x * C * 32 + o_local;
  const bool active = part == 0 && o < out;
  float sum = 0.0f;
  {
    const int c = o_local / 32, i = o_local % 32;
#pragma unroll 8
    for (int kk = 0; kk < 32; ++kk) {
      const int k = part * 32 + ((kk + 4 * part) & 31);
      sum += red[(k * C + c) * 33 + i];
    }
#pragma unroll
    for (int off = 1; off < P; off <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  }

  if (gridDim.y == 1) {
    if (active) store_out(y, o, sum);
    return;
  }

  // 4. split-K: publish this block's partial, the last block of the tile reduces in order.
  if (active) partials[static_cast<size_t>(blockIdx.y) * out + o] = sum;
  __threadfence();
  __syncthreads();
  __shared__ bool is_last;
  if (threadIdx.x == 0) is_last = atomicAdd(&tile_counters[blockIdx.x], 1u) == gridDim.y - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  if (active) {
    float total = 0.0f;
    for (int s = 0; s < static_cast<int>(gridDim.y); ++s) total += __ldcg(&partials[static_cast<size_t>(s) * out + o]);
    store_out(y, o, total);
  }
  if (threadIdx.x == 0) tile_counters[blockIdx.x] = 0;
}

template <class OutT>
using KernelPtr = void (*)(const __half*, const uint4*, const uint4*, const __half*, OutT*, float*, unsigned*, int,
                           int, int, int);

template <class OutT, int kFlavor>
KernelPtr<OutT> pick_flavor(int C, int R) {
  if (R == 16) {
    if (C == 2) return gemv_w4a16_kernel<2, 16, kFlavor, OutT>;
    if (C == 4) return gemv_w4a16_kernel<4, 16, kFlavor, OutT>;
    if (C == 8) return gemv_w4a16_kernel<8, 16, kFlavor, OutT>;
  }
  if constexpr (kFlavor != 2) {  // flavour 2 holds a run's R rows in registers: R = 16 only
    if (R == 32) {
      if (C == 2) return gemv_w4a16_kernel<2, 32, kFlavor, OutT>;
      if (C == 4) return gemv_w4a16_kernel<4, 32, kFlavor, OutT>;
      if (C == 8) return gemv_w4a16_kernel<8, 32, kFlavor, OutT>;
    }
  }
  return nullptr;
}

template <class OutT>
KernelPtr<OutT> pick_kernel(const GemvW4A16Config& cfg) {
  KernelPtr<OutT> k = nullptr;
  if (cfg.flavor == 0) k = pick_flavor<OutT, 0>(cfg.cols_per_block, cfg.rows_per_run);
  if (cfg.flavor == 1) k = pick_flavor<OutT, 1>(cfg.cols_per_block, cfg.rows_per_run);
  if (cfg.flavor == 2) k = pick_flavor<OutT, 2>(cfg.cols_per_block, cfg.rows_per_run);
  if (cfg.flavor == 3) k = pick_flavor<OutT, 3>(cfg.cols_per_block, cfg.rows_per_run);
  if (!k)
    throw Error("gemv_w4a16: unsupported config cols_per_block=" + std::to_string(cfg.cols_per_block) +
                " rows_per_run=" + std::to_string(cfg.rows_per_run) + " flavor=" + std::to_string(cfg.flavor) +
                " (C ∈ {2,4,8}, R ∈ {16,32}, flavour 0..3, flavour 2 with R = 16)");
  return k;
}

struct Plan {
  int tiles, split_k, rows_per_split;
};

// Effective split: at most kMaxSplitK, at most one block per run, rows per split a multiple of R.
Plan make_plan(int64_t in, int64_t out, const GemvW4A16Config& cfg) {
  const int64_t cols = out / 32;
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
  const auto key = std::make_tuple(device, cfg.cols_per_block, cfg.rows_per_run, cfg.flavor);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int sms = 0, blocks = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DeviceGuard guard(device);
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, pick_kernel<__half>(cfg), kThreads, 0));
  return cache[key] = {std::max(1, blocks), sms};
}

}  // namespace

GemvW4A16Config gemv_w4a16_default_config(int64_t in, int64_t out, int group_size, int device) {
  GemvW4A16Config cfg;
  cfg.rows_per_run = 16;
  cfg.cols_per_block = 4;
  const int64_t cols = out / 32;
  if (cols % 4 != 0 || cols / 4 < 16) cfg.cols_per_block = 2;  // narrow outputs: more column tiles
  const auto [blocks_per_sm, sms] = occupancy(device, cfg);
  const int64_t wave = int64_t{blocks_per_sm} * sms;
  const int64_t tiles = (cols + cfg.cols_per_block - 1) / cfg.cols_per_block;
  // One wave of resident blocks: split along `in` until the column tiles fill it.
  cfg.split_k = static_cast<int>(std::clamp<int64_t>(wave / std::max<int64_t>(tiles, 1), 1, kMaxSplitK));
  return cfg;
}

size_t gemv_w4a16_workspace_bytes(int64_t out) {
  const size_t partial_bytes = size_t(kMaxSplitK) * out * sizeof(float);
  const size_t counter_bytes = size_t(out / 32 + 1) * sizeof(unsigned);
  return partial_bytes + counter_bytes;
}

void launch_gemv_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, void* y,
                       DType y_dtype, int64_t in, int64_t out, int group_size, void* workspace,
                       const GemvW4A16Config& cfg, cudaStream_t stream) {
  const Plan plan = make_plan(in, out, cfg);
  float* partials = static_cast<float*>(workspace);
  unsigned* counters = reinterpret_cast<unsigned*>(static_cast<char*>(workspace) + size_t(kMaxSplitK) * out * sizeof(float));
  const dim3 grid(plan.tiles, plan.split_k);
  const auto* qw = reinterpret_cast<const uint4*>(qweight);
  const auto* qz = reinterpret_cast<const uint4*>(qzeros);
  if (y_dtype == DType::F16) {
    pick_kernel<__half>(cfg)<<<grid, kThreads, 0, stream>>>(
        x, qw, qz, scales, static_cast<__half*>(y), partials, counters, static_cast<int>(in), static_cast<int>(out),
        group_size, plan.rows_per_split);
  } else if (y_dtype == DType::F32) {
    pick_kernel<float>(cfg)<<<grid, kThreads, 0, stream>>>(
        x, qw, qz, scales, static_cast<float*>(y), partials, counters, static_cast<int>(in), static_cast<int>(out),
        group_size, plan.rows_per_split);
  } else {
    throw Error("gemv_w4a16: y dtype must be f16 or f32");
  }
  CUDA_CHECK_LAUNCH();
}

void gemv_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, void* y,
                DType y_dtype, int64_t in, int64_t out, int group_size, void* workspace, size_t workspace_bytes,
                cudaStream_t stream, const GemvW4A16Config* config) {
  const std::string op = "gemv_w4a16";
  const std::string shape = " (in=" + std::to_string(in) + ", out=" + std::to_string(out) +
                            ", group=" + std::to_string(group_size) + ")";
  if (group_size != 32 && group_size != 64 && group_size != 128)
    throw Error(op + ": group size must be 32, 64 or 128" + shape);
  if (in <= 0 || out <= 0 || in % group_size != 0 || out % 32 != 0)
    throw Error(op + ": need in % group == 0 and out % 32 == 0" + shape);
  if (in >= (int64_t{1} << 30) || out >= (int64_t{1} << 30)) throw Error(op + ": shape too large" + shape);
  if (y_dtype != DType::F16 && y_dtype != DType::F32) throw Error(op + ": y dtype must be f16 or f32");
  for (auto [p, name] : {std::pair<const void*, const char*>{x, "x"}, {qweight, "qweight"}, {qzeros, "qzeros"},
                         {scales, "scales"}, {y, "y"}, {workspace, "workspace"}})
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) throw Error(op + ": tensor '" + name + "' is not 16-byte aligned");
  if (workspace_bytes < gemv_w4a16_workspace_bytes(out))
    throw Error(op + ": workspace of " + std::to_string(workspace_bytes) + " bytes, need " +
                std::to_string(gemv_w4a16_workspace_bytes(out)) + shape);
  const int device = device_of_tensors(op.c_str(), {{x, "x"},
                                                    {qweight, "qweight"},
                                                    {qzeros, "qzeros"},
                                                    {scales, "scales"},
                                                    {y, "y"},
                                                    {workspace, "workspace"}});
  DeviceGuard guard(device);
  check_stream_device(op.c_str(), stream, device);
  const GemvW4A16Config cfg = config ? *config : gemv_w4a16_default_config(in, out, group_size, device);
  if (cfg.rows_per_run > group_size)
    throw Error(op + ": rows_per_run " + std::to_string(cfg.rows_per_run) + " exceeds the group size" + shape);
  launch_gemv_w4a16(x, qweight, qzeros, scales, y, y_dtype, in, out, group_size, workspace, cfg, stream);
}

}  // namespace mixq::cuda
