#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "error.h"

namespace mixq {

Sampler::Sampler(const SamplingOptions& opts) : opts_(opts), rng_(opts.seed) {
  if (!opts.greedy) {
    if (!(opts.temperature > 0) || !std::isfinite(opts.temperature)) throw Error("sampling: temperature must be > 0");
    if (opts.top_k < 0) throw Error("sampling: top_k must be >= 0");
    if (!(opts.top_p > 0 && opts.top_p <= 1)) throw Error("sampling: top_p must be in (0, 1]");
  }
}

std::vector<double> Sampler::distribution(const float* logits, int64_t vocab) const {
  std::vector<double> p(size_t(vocab), 0.0);
  if (opts_.greedy) {
    p[size_t(argmax(logits, vocab))] = 1.0;
    return p;
  }
  // Candidates sorted by logit, descending (stable: lower id first on ties).
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = vocab;
  if (opts_.top_k > 0 && opts_.top_k < vocab) keep = opts_.top_k;
  auto cmp = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), cmp);
  order.resize(size_t(keep));
  const double inv_t = 1.0 / double(opts_.temperature);
  const double mx = double(logits[order[0]]) * inv_t;
  std::vector<double> prob(order.size());
  double sum = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    prob[i] = std::exp(double(logits[order[i]]) * inv_t - mx);
    sum += prob[i];
  }
  for (double& q : prob) q /= sum;
  // Nucleus: the smallest prefix whose mass reaches top_p (at least one token).
  size_t cut = prob.size();
  if (opts_.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < prob.size(); ++i) {
      cum += prob[i];
      if (cum >= double(opts_.top_p)) {
        cut = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (size_t i = 0; i < cut; ++i) kept += prob[i];
  for (size_t i = 0; i < cut; ++i) p[size_t(order[i])] = prob[i] / kept;
  return p;
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (opts_.greedy) return argmax(logits, vocab);
  const std::vector<double> p = distribution(logits, vocab);
  const double u = double(rng_() >> 11) * (1.0 / 9007199254740992.0);  // [0, 1), 53 random bits
  double cum = 0;
  int32_t last = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (p[size_t(i)] <= 0) continue;
    last = int32_t(i);
    cum += p[size_t(i)];
    if (u < cum) return int32_t(i);
  }
  return last;  // rounding left u above the final cumulative sum
}

}  // namespace mixq
