// moe_align_block_size kernel, launcher and guarded entry (moe_align_block_size.h).
//
// One thread block of T threads; thread t owns the contiguous slot range [t·chunk, (t+1)·chunk).
//   1. counts[t][e] = slots of expert e in thread t's range                  (shared, T×E int32)
//   2. per expert, an exclusive scan of counts[·][e] over threads (one warp per expert), giving each thread
//      its first position inside the expert's run, and the expert's total
//   3. expert_start[e] = Σ_{e'<e} roundup(total[e'], B); num_tokens_post_pad = expert_start[E]
//   4. sorted_token_ids ← sentinel everywhere; expert_ids per block (−1 past the padded length)
//   5. each thread walks its range again and writes slot ids at expert_start[e] + its running offset:
//      ascending slot order inside each expert, no atomics, deterministic.
// Limits: E ≤ 256 (shared memory T·E·4 bytes ≤ 48 KB picks T), numel + E·(B−1) < 2^31.
#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "device_guard.h"
#include "moe_align_block_size.h"

namespace mixq::cuda {
namespace {

constexpr int kSharedBytes = 48 * 1024;

__global__ void moe_align_block_size_kernel(const int32_t* __restrict__ topk_ids, int numel, int num_experts,
                                            int block_size, int capacity, int max_blocks,
                                            int32_t* __restrict__ sorted_token_ids, int32_t* __restrict__ expert_ids,
                                            int32_t* __restrict__ num_tokens_post_pad) {
  extern __shared__ int32_t smem[];
  const int T = blockDim.x, E = num_experts, t = threadIdx.x;
  int32_t* counts = smem;                 // [T][E]
  int32_t* expert_start = smem + T * E;   // [E + 1]

  const int chunk = (numel + T - 1) / T;
  const int begin = min(t * chunk, numel), end = min(begin + chunk, numel);

  // 1. per-thread histogram
  for (int e = 0; e < E; ++e) counts[t * E + e] = 0;
  for (int i = begin; i < end; ++i) {
    const int e = topk_ids[i];
    if (e >= 0 && e < E) ++counts[t * E + e];
  }
  __syncthreads();

  // 2. exclusive scan over threads, one warp per expert
  const int warp = t / 32, lane = t % 32, warps = T / 32;
  for (int e = warp; e < E; e += warps) {
    int carry = 0;
    for (int base = 0; base < T; base += 32) {
      const int v = counts[(base + lane) * E + e];
      int incl = v;
      for (int off = 1; off < 32; off <<= 1) {
        const int n = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += n;
      }
      counts[(base + lane) * E + e] = carry + incl - v;
      carry += __shfl_sync(0xffffffffu, incl, 31);
    }
    if (lane == 0) expert_start[e + 1] = carry;  // the total for now; turned into starts in step 3
  }
  __syncthreads();

  // 3. padded starts (E ≤ 256: a serial loop on one thread is a few hundred cycles)
  if (t == 0) {
    int run = 0;
    for (int e = 0; e < E; ++e) {
      const int total = expert_start[e + 1];
      expert_start[e] = run;
      run += (total + block_size - 1) / block_size * block_size;
    }
    expert_start[E] = run;
    *num_tokens_post_pad = run;
  }
  __syncthreads();

  // 4. sentinel fill and the expert of each block
  for (int i = t; i < capacity; i += T) sorted_token_ids[i] = numel;
  const int padded = expert_start[E];
  for (int b = t; b < max_blocks; b += T) {
    const int row = b * block_size;
    int expert = -1;
    if (row < padded) {  // the last e with expert_start[e] <= row (binary search over E+1 starts)
      int lo = 0, hi = E - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (expert_start[mid] <= row) lo = mid; else hi = mid - 1;
      }
      expert = lo;
    }
    expert_ids[b] = expert;
  }
  __syncthreads();  // the sentinel writes above must land before the slot ids below

  // 5. scatter slot ids
  for (int i = begin; i < end; ++i) {
    const int e = topk_ids[i];
    if (e >= 0 && e < E) sorted_token_ids[expert_start[e] + counts[t * E + e]++] = i;
  }
}

}  // namespace

int64_t moe_align_capacity(int64_t numel, int num_experts, int block_size) {
  return numel + int64_t{num_experts} * (block_size - 1);
}

int64_t moe_align_max_blocks(int64_t numel, int num_experts, int block_size) {
  return (moe_align_capacity(numel, num_experts, block_size) + block_size - 1) / block_size;
}

void launch_moe_align_block_size(const int32_t* topk_ids, int64_t numel, int num_experts, int block_size,
                                 int32_t* sorted_token_ids, int32_t* expert_ids, int32_t* num_tokens_post_pad,
                                 cudaStream_t stream) {
  // Threads: enough to give each a few slots, a multiple of 32, and counts[T][E] within 48 KB of shared memory.
  const int by_smem = (kSharedBytes / 4 - (num_experts + 1)) / num_experts;
  int threads = static_cast<int>(std::min<int64_t>((numel + 3) / 4, 1024));
  threads = std::min(threads, by_smem);
  threads = std::max(32, threads / 32 * 32);
  const size_t smem = (size_t(threads) * num_experts + num_experts + 1) * sizeof(int32_t);
  moe_align_block_size_kernel<<<1, threads, smem, stream>>>(
      topk_ids, static_cast<int>(numel), num_experts, block_size,
      static_cast<int>(moe_align_capacity(numel, num_experts, block_size)),
      static_cast<int>(moe_align_max_blocks(numel, num_experts, block_size)), sorted_token_ids, expert_ids,
      num_tokens_post_pad);
  CUDA_CHECK_LAUNCH();
}

void moe_align_block_size(const int32_t* topk_ids, int64_t numel, int num_experts, int block_size,
                          int32_t* sorted_token_ids, int32_t* expert_ids, int32_t* num_tokens_post_pad,
                          cudaStream_t stream) {
  const char* op = "moe_align_block_size";
  if (num_experts < 1 || num_experts > kMoeAlignMaxExperts)
    throw Error(std::string(op) + ": num_experts " + std::to_string(num_experts) + " outside [1, " +
                std::to_string(kMoeAlignMaxExperts) + "]");
  if (block_size < 1) throw Error(std::string(op) + ": block_size must be >= 1, got " + std::to_string(block_size));
  if (numel < 0 || moe_align_capacity(numel, num_experts, block_size) >= (int64_t{1} << 31))
    throw Error(std::string(op) + ": tokens·top_k = " + std::to_string(numel) + " is too large for int32 slot ids");
  const int device =
      numel > 0 ? device_of_tensors(op, {{topk_ids, "topk_ids"},
                                         {sorted_token_ids, "sorted_token_ids"},
                                         {expert_ids, "expert_ids"},
                                         {num_tokens_post_pad, "num_tokens_post_pad"}})
                : device_of_tensors(op, {{sorted_token_ids, "sorted_token_ids"},
                                         {expert_ids, "expert_ids"},
                                         {num_tokens_post_pad, "num_tokens_post_pad"}});
  DeviceGuard guard(device);
  check_stream_device(op, stream, device);
  launch_moe_align_block_size(topk_ids, numel, num_experts, block_size, sorted_token_ids, expert_ids,
                              num_tokens_post_pad, stream);
}

}  // namespace mixq::cuda
