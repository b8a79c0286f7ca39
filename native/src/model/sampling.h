// Token sampling: greedy argmax, or temperature → top-k → top-p (nucleus) → a draw.
// RNG: std::mt19937_64 seeded with SamplingOptions::seed; a draw is (rng() >> 11) · 2⁻⁵³, a double in
// [0, 1) built by hand (not std::uniform_real_distribution, whose algorithm differs between standard
// libraries), so a seed gives the same tokens on every platform.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "engine.h"
#include "ops/argmax.h"

namespace mixq {

// argmax(logits, n): ops/argmax.h.

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opts);
  int32_t sample(const float* logits, int64_t vocab);
  // Probabilities the sampler draws from (after temperature/top-k/top-p), for tests: [vocab].
  std::vector<double> distribution(const float* logits, int64_t vocab) const;

 private:
  SamplingOptions opts_;
  std::mt19937_64 rng_;
};

}  // namespace mixq
