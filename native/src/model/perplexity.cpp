#include "perplexity.h"

#include <chrono>
#include <cmath>
#include <vector>

namespace mixq {

double token_nll(const float* logits, int64_t vocab, int32_t target) {
  double mx = logits[0];
  for (int64_t i = 1; i < vocab; ++i) mx = std::max(mx, double(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - mx);
  return -(double(logits[target]) - mx - std::log(sum));
}

PerplexityResult perplexity(Context& ctx, const int32_t* ids, size_t n, int windows, int seq,
                            const std::atomic<bool>* cancel) {
  if (windows <= 0 || seq < 2) throw Error("perplexity: need windows >= 1 and seq >= 2");
  if (size_t(windows) * size_t(seq) > n) {
    throw Error("perplexity: " + std::to_string(windows) + " windows of " + std::to_string(seq) + " tokens need " +
                std::to_string(size_t(windows) * size_t(seq)) + " ids, the stream has " + std::to_string(n));
  }
  if (seq > ctx.capacity()) {
    throw Error("perplexity: seq " + std::to_string(seq) + " exceeds the context capacity " +
                std::to_string(ctx.capacity()));
  }
  const int64_t vocab = ctx.model().config().vocab_size;
  const auto t0 = std::chrono::steady_clock::now();
  double total = 0;
  int64_t count = 0;
  EvalCapture cap;
  cap.all_logits = true;
  for (int w = 0; w < windows; ++w) {
    if (cancel && cancel->load()) throw Cancelled();
    ctx.truncate(0);
    const int32_t* win = ids + size_t(w) * size_t(seq);
    ctx.eval(std::vector<int32_t>(win, win + seq), cap);
    for (int t = 0; t + 1 < seq; ++t) {
      total += token_nll(&cap.logits[size_t(t) * size_t(vocab)], vocab, win[t + 1]);
      ++count;
    }
  }
  ctx.truncate(0);
  PerplexityResult r;
  r.tokens = count;
  r.nll = total / double(count);
  r.ppl = std::exp(r.nll);
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace mixq
