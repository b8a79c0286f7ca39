// generate(): longest-common-prefix KV reuse, prefill, then one token at a time with streaming,
// stop conditions and cancellation polled before each token.
#include <algorithm>
#include <chrono>

#include "engine.h"
#include "sampling.h"

namespace mixq {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::StopId: return "stop_id";
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::Cancelled: return "cancelled";
    case StopReason::ContextFull: return "context_full";
    case StopReason::Callback: return "callback";
  }
  return "?";
}

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
bool cancelled(const std::atomic<bool>* c) { return c && c->load(std::memory_order_relaxed); }
}  // namespace

GenerateResult generate(Context& ctx, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                        const TokenCallback& on_token, const std::atomic<bool>* cancel) {
  GenerateResult res;
  if (prompt.empty()) throw Error("generate: empty prompt");
  if (int(prompt.size()) > ctx.capacity()) {
    throw Error("generate: prompt of " + std::to_string(prompt.size()) + " tokens exceeds the context capacity of " +
                std::to_string(ctx.capacity()));
  }
  const ModelConfig& cfg = ctx.model().config();
  for (int32_t t : prompt) {
    if (t < 0 || t >= cfg.vocab_size) {
      throw Error("generate: prompt token id " + std::to_string(t) + " is out of range (vocab size " +
                  std::to_string(cfg.vocab_size) + ")");
    }
  }
  Sampler sampler(opts.sampling);
  res.prompt_tokens = int(prompt.size());

  // Reuse the cached prefix, but always evaluate at least the last prompt token for fresh logits.
  const std::vector<int32_t>& cached = ctx.cached_tokens();
  size_t common = 0;
  while (common < cached.size() && common < prompt.size() && cached[common] == prompt[common]) ++common;
  const size_t reuse = std::min(common, prompt.size() - 1);
  ctx.truncate(int(reuse));
  res.reused_tokens = int(reuse);

  if (cancelled(cancel)) {
    res.stop_reason = StopReason::Cancelled;
    return res;
  }
  // Prefill in chunks: bounded activation memory, and a cancel is seen between chunks. Results are
  // the same as one batch (every op computes a token's row independently of the others in the batch).
  EvalCapture cap;
  cap.next_token_only = opts.sampling.greedy;  // the argmax on the device: no logits copied to the host
  const auto t_prefill = std::chrono::steady_clock::now();
  const size_t chunk = size_t(std::max(1, opts.prefill_chunk));
  for (size_t pos = reuse; pos < prompt.size(); pos += chunk) {
    if (pos > reuse && cancelled(cancel)) {
      res.stop_reason = StopReason::Cancelled;
      res.prefill_ms = ms_since(t_prefill);
      return res;
    }
    const size_t end = std::min(prompt.size(), pos + chunk);
    ctx.eval(std::vector<int32_t>(prompt.begin() + std::ptrdiff_t(pos), prompt.begin() + std::ptrdiff_t(end)), cap);
    res.evaluated_tokens += int(end - pos);
  }
  res.prefill_ms = ms_since(t_prefill);

  const auto t_decode = std::chrono::steady_clock::now();
  res.stop_reason = StopReason::MaxTokens;
  for (int i = 0; i < opts.max_tokens; ++i) {
    if (cancelled(cancel)) {
      res.stop_reason = StopReason::Cancelled;
      break;
    }
    const int32_t tok =
        cap.next_token_only ? cap.next_token : sampler.sample(cap.logits.data(), int64_t(cap.logits.size()));
    res.tokens.push_back(tok);
    const bool keep_going = on_token ? on_token(tok) : true;
    if (tok == cfg.eos_token_id && !opts.ignore_eos) {
      res.stop_reason = StopReason::Eos;
      break;
    }
    if (std::find(opts.stop_ids.begin(), opts.stop_ids.end(), tok) != opts.stop_ids.end()) {
      res.stop_reason = StopReason::StopId;
      break;
    }
    if (!keep_going) {
      res.stop_reason = StopReason::Callback;
      break;
    }
    if (i + 1 == opts.max_tokens) break;  // the last token needs no forward pass
    if (ctx.n_past() >= ctx.capacity()) {
      res.stop_reason = StopReason::ContextFull;
      break;
    }
    ctx.eval({tok}, cap);
    ++res.evaluated_tokens;
  }
  res.decode_ms = ms_since(t_decode);
  return res;
}

}  // namespace mixq
