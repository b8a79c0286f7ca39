// A fixed pool of worker threads for data-parallel loops (rows of a matmul, heads, experts).
#pragma once
#include <cstdint>
#include <functional>

namespace mixq {

// Most worker threads a pool may have. Beyond this a pool only oversubscribes any machine MixQ targets (and the OS may
// refuse to start them); a request for more is an error naming this maximum, never a clamp.
constexpr int kMaxThreads = 256;

// The thread count a request means: 0 → the hardware threads (at most kMaxThreads); 1..kMaxThreads → itself.
// Throws mixq::Error "<what>: N is out of range (0 = all hardware threads, at most 256)" otherwise.
int resolve_thread_count(int64_t requested, const char* what = "threads");

class ThreadPool {
 public:
  // threads <= 0: hardware concurrency. Throws mixq::Error (nothing left running) when the count is out of range or
  // the OS refuses to start a worker.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int size() const;
  // Calls fn(begin, end) over [0, n) split into contiguous chunks, one per worker; blocks until done.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

  struct Impl;
  Impl* impl;

  // Tests only: the next pools fail to start their (n+1)-th worker as if the OS refused it (-1: off).
  static void fail_worker_start_after_for_tests(int n);
};

}  // namespace mixq
