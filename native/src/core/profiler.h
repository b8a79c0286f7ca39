// Per-device op timings: every Backend owns one Profiler. Off by default; while off an op pays one test of a
// relaxed atomic flag at entry and one at exit (no clock read, no lock, no allocation). While on, each op adds one
// event under a mutex: its per-name statistics (calls, total time, bytes moved) and an entry of a ring buffer of
// recent events (the timeline).
//
// Two ways to report an op:
//   - ProfileScope: wall clock around a synchronous op (the CPU backend opens one at each op entry);
//   - Profiler::record(): an event whose times the backend measured itself (a GPU backend: CUDA events resolved
//     after the fact, converted to this clock by an event recorded at a known Profiler::now_us()).
// Times are µs on one process-wide steady clock (Profiler::now_us), so events of all devices share a time axis.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace mixq {

// One op run on a device's stream. `name` has static storage (a string literal): the ring holds the pointer.
struct ProfileEvent {
  const char* name = "";
  int stream = 0;       // the device's stream (the CPU has one: 0)
  double start_us = 0;  // Profiler::now_us() at the op's start
  double dur_us = 0;
};

// Totals of one op name since the last reset.
struct KernelStats {
  std::string name;
  uint64_t calls = 0;
  double total_us = 0;
  uint64_t bytes = 0;   // memory read + written, summed over calls; 0 = unknown (GB/s = bytes / total time)
  double mean_us() const { return calls ? total_us / double(calls) : 0; }
};

struct ProfileSnapshot {
  bool enabled = false;
  std::vector<KernelStats> kernels;  // in order of first call
  std::vector<ProfileEvent> events;  // the ring's contents, oldest first
  uint64_t dropped_events = 0;       // events overwritten in the ring since the last reset
};

class Profiler {
 public:
  static constexpr size_t kDefaultRingEvents = 16384;  // a Mixtral-8x7B decode step is ~600 ops per device
  explicit Profiler(size_t ring_events = kDefaultRingEvents) : ring_capacity_(ring_events ? ring_events : 1) {}
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  // Switches timing on or off (any thread). The ring is allocated on the first switch on; statistics are kept.
  void set_enabled(bool on);
  // Adds one event (ignored while off). Thread-safe.
  void record(const char* name, int stream, double start_us, double dur_us, uint64_t bytes = 0);
  // A consistent copy of the statistics and the ring (any thread; holds the lock for the copy only).
  ProfileSnapshot snapshot() const;
  // Forgets statistics and events (the on/off state stays).
  void reset();

  // µs since the first call in this process, steady clock.
  static double now_us();

 private:
  struct Stat {
    const char* name;
    uint64_t calls;
    double total_us;
    uint64_t bytes;
  };
  std::atomic<bool> enabled_{false};
  mutable std::mutex mutex_;
  std::vector<Stat> stats_;         // few names: a linear search by pointer beats a map
  std::vector<ProfileEvent> ring_;  // [ring_capacity_] once enabled
  size_t ring_capacity_;
  uint64_t recorded_ = 0;           // events recorded since reset; the next goes to ring_[recorded_ % capacity]
};

// Wall-clock timing of a synchronous op: construct at the op's entry; the event is recorded when it ends.
// Set `bytes` (read + written) where the op knows them, guarded by `if (scope)` so that nothing is computed while off.
class ProfileScope {
 public:
  ProfileScope(Profiler& p, const char* name, int stream = 0)
      : profiler_(p.enabled() ? &p : nullptr), name_(name), stream_(stream) {
    if (profiler_) start_us_ = Profiler::now_us();
  }
  ~ProfileScope() {
    if (profiler_) profiler_->record(name_, stream_, start_us_, Profiler::now_us() - start_us_, bytes);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;
  explicit operator bool() const { return profiler_ != nullptr; }
  uint64_t bytes = 0;

 private:
  Profiler* profiler_;
  const char* name_;
  int stream_;
  double start_us_ = 0;
};

}  // namespace mixq
