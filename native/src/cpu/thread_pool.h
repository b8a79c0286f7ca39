// A fixed pool of worker threads for data-parallel loops (rows of a matmul, heads, experts).
#pragma once
#include <cstdint>
#include <functional>

namespace mixq {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads <= 0: hardware concurrency
  ~ThreadPool();
  int size() const;
  // Calls fn(begin, end) over [0, n) split into contiguous chunks, one per worker; blocks until done.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

  struct Impl;
  Impl* impl;
};

}  // namespace mixq
