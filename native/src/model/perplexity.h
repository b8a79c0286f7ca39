// Perplexity over non-overlapping windows: window w = ids[seq·w, seq·w + seq), a fresh cache per
// window, each window predicting its own next tokens (seq − 1 predictions), ppl = exp(mean NLL).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "engine.h"

namespace mixq {

struct PerplexityResult {
  double ppl = 0;
  int64_t tokens = 0;  // predictions counted: windows · (seq − 1)
  double nll = 0;      // mean negative log-likelihood (nats)
  double ms = 0;
};

// Throws mixq::Error when ids hold fewer than windows·seq tokens or seq exceeds the context
// capacity; throws mixq::Cancelled when `cancel` becomes true (polled before each window).
PerplexityResult perplexity(Context& ctx, const int32_t* ids, size_t n, int windows, int seq,
                            const std::atomic<bool>* cancel);

// −log softmax(logits)[target], computed in double. logits: [vocab].
double token_nll(const float* logits, int64_t vocab, int32_t target);

}  // namespace mixq
