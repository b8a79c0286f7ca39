// moe_align_block_size: groups the (token, slot) pairs of a top-k routing by expert, each expert's run padded
// to a multiple of the GEMM's row-block size B, so a grouped GEMM can give every B-row block to one expert.
//
// Input  topk_ids [tokens, top_k] int32: the expert of each slot; numel = tokens·top_k.
//        Ids outside [0, E) are skipped (no entry in the output), e.g. -1 for masked tokens.
// Output sorted_token_ids int32 [moe_align_capacity(numel, E, B)]: flattened slot ids t·top_k + j grouped by
//          expert (expert 0 first), ascending inside each expert; every other entry is the sentinel numel.
//        expert_ids int32 [moe_align_max_blocks(numel, E, B)]: the expert of each B-row block; blocks past
//          num_tokens_post_pad hold -1.
//        num_tokens_post_pad int32 [1]: Σ_e roundup(count_e, B) (an expert with no slots takes no block).
// The order inside an expert is ascending slot id, so the result is deterministic.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mixq::cuda {

constexpr int kMoeAlignMaxExperts = 256;

// numel + E·(B−1): enough for any routing.
int64_t moe_align_capacity(int64_t numel, int num_experts, int block_size);
// ceil(capacity / B).
int64_t moe_align_max_blocks(int64_t numel, int num_experts, int block_size);

// Guarded entry: all four tensors must live on one GPU (checked); runs there on `stream`.
// Throws mixq::Error on a wrong device, num_experts outside [1, 256], block_size < 1 or sizes ≥ 2^31.
void moe_align_block_size(const int32_t* topk_ids, int64_t numel, int num_experts, int block_size,
                          int32_t* sorted_token_ids, int32_t* expert_ids, int32_t* num_tokens_post_pad,
                          cudaStream_t stream);

// The launcher (no checks, no guard): the current device must be the tensors' device.
void launch_moe_align_block_size(const int32_t* topk_ids, int64_t numel, int num_experts, int block_size,
                                 int32_t* sorted_token_ids, int32_t* expert_ids, int32_t* num_tokens_post_pad,
                                 cudaStream_t stream);

}  // namespace mixq::cuda
