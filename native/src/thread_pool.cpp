// Fork-join pool: parallel_for publishes one job (a generation number), workers take their chunk,
// the caller runs chunk 0 itself and waits for the rest. Workers spin briefly before sleeping so
// the many small matmuls of a decode step do not pay a futex wake-up each.
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MIXQ_CPU_RELAX() _mm_pause()
#else
#define MIXQ_CPU_RELAX() ((void)0)
#endif

namespace mixq {

namespace {
thread_local bool t_inside_pool = false;  // nested parallel_for runs inline
constexpr int kSpinIterations = 20000;    // ~ tens of microseconds of polling before blocking
}  // namespace

struct ThreadPool::Impl {
  int threads = 1;
  std::vector<std::thread> workers;
  std::mutex job_mutex;  // one job at a time (several contexts may share a model's pool)

  std::mutex m;
  std::condition_variable wake;
  std::condition_variable done;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> remaining{0};
  bool stop = false;

  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int chunks = 0;
  std::exception_ptr error;
  std::mutex error_mutex;

  void run_chunk(int c) {
    const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    if (begin >= end) return;
    try {
      (*fn)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_mutex);
      if (!error) error = std::current_exception();
    }
  }

  void worker(int index) {
    t_inside_pool = true;
    uint64_t seen = 0;
    for (;;) {
      uint64_t g = generation.load(std::memory_order_acquire);
      for (int i = 0; g == seen && i < kSpinIterations; ++i) {
        MIXQ_CPU_RELAX();
        g = generation.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m);
        wake.wait(lk, [&] { return stop || generation.load(std::memory_order_acquire) != seen; });
        if (stop) return;
        g = generation.load(std::memory_order_acquire);
      }
      seen = g;
      if (index < chunks) run_chunk(index);
      if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(m);
        done.notify_one();
      }
    }
  }
};

ThreadPool::ThreadPool(int threads) : impl(new Impl) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  impl->threads = threads;
  for (int i = 1; i < threads; ++i) impl->workers.emplace_back([this, i] { impl->worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(impl->m);
    impl->stop = true;
  }
  impl->wake.notify_all();
  for (auto& t : impl->workers) t.join();
  delete impl;
}

int ThreadPool::size() const { return impl->threads; }

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (impl->threads == 1 || n == 1 || t_inside_pool) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> job(impl->job_mutex);
  impl->fn = &fn;
  impl->n = n;
  impl->chunks = int(std::min<int64_t>(impl->threads, n));
  impl->error = nullptr;
  // Every worker acknowledges every generation (even without a chunk) so none can miss the next one.
  impl->remaining.store(impl->threads - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(impl->m);
    impl->generation.fetch_add(1, std::memory_order_acq_rel);
  }
  impl->wake.notify_all();
  t_inside_pool = true;
  impl->run_chunk(0);
  t_inside_pool = false;
  for (int i = 0; i < kSpinIterations && impl->remaining.load(std::memory_order_acquire) != 0; ++i) MIXQ_CPU_RELAX();
  if (impl->remaining.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lk(impl->m);
    impl->done.wait(lk, [&] { return impl->remaining.load(std::memory_order_acquire) == 0; });
  }
  if (impl->error) std::rethrow_exception(impl->error);
}

}  // namespace mixq
