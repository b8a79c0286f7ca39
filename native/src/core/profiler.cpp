#include "profiler.h"

#include <chrono>
#include <cstring>

namespace mixq {

double Profiler::now_us() {
  using Clock = std::chrono::steady_clock;
  static const Clock::time_point epoch = Clock::now();
  return std::chrono::duration<double, std::micro>(Clock::now() - epoch).count();
}

void Profiler::set_enabled(bool on) {
  if (on) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ring_.empty()) ring_.resize(ring_capacity_);
    if (stats_.capacity() < 64) stats_.reserve(64);
  }
  enabled_.store(on, std::memory_order_relaxed);
}

void Profiler::record(const char* name, int stream, double start_us, double dur_us, uint64_t bytes) {
  if (!enabled()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (ring_.empty()) return;  // switched on by another thread while this op ran: not yet allocated
  Stat* s = nullptr;
  for (Stat& st : stats_)
    if (st.name == name || std::strcmp(st.name, name) == 0) {
      s = &st;
      break;
    }
  if (!s) {
    stats_.push_back(Stat{name, 0, 0, 0});
    s = &stats_.back();
  }
  s->calls++;
  s->total_us += dur_us;
  s->bytes += bytes;
  ring_[size_t(recorded_ % ring_capacity_)] = ProfileEvent{name, stream, start_us, dur_us};
  recorded_++;
}

ProfileSnapshot Profiler::snapshot() const {
  ProfileSnapshot out;
  out.enabled = enabled();
  std::lock_guard<std::mutex> lock(mutex_);
  out.kernels.reserve(stats_.size());
  for (const Stat& s : stats_) out.kernels.push_back(KernelStats{s.name, s.calls, s.total_us, s.bytes});
  const uint64_t held = recorded_ < ring_capacity_ ? recorded_ : ring_capacity_;
  out.dropped_events = recorded_ - held;
  out.events.reserve(size_t(held));
  for (uint64_t i = recorded_ - held; i < recorded_; ++i) out.events.push_back(ring_[size_t(i % ring_capacity_)]);
  return out;
}

void Profiler::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.clear();
  recorded_ = 0;
}

}  // namespace mixq
