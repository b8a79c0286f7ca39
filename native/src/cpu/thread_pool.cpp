// Fork-join pool for the many short data-parallel loops of a forward pass.
//
// A job is split into `chunks` contiguous ranges (one per thread). Chunks are CLAIMED dynamically
// (a compare-and-swap on one 64-bit word: job generation in the high half, next chunk in the low
// half), and the caller claims chunks too. So when a worker is descheduled — the machine is shared,
// or busier than its cores — the caller simply runs the remaining chunks itself instead of waiting
// for that worker to be scheduled; it only waits for chunks some thread has actually started.
// The split into ranges is fixed by (n, chunks), so results do not depend on who ran which chunk.
// Idle workers spin briefly (decode steps issue jobs microseconds apart), then sleep on a condvar.
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MIXQ_CPU_RELAX() _mm_pause()
#else
#define MIXQ_CPU_RELAX() ((void)0)
#endif

namespace mixq {

namespace {
thread_local bool t_inside_pool = false;  // nested parallel_for runs inline
constexpr int kSpinIterations = 4000;     // ~tens of microseconds of polling before sleeping
std::atomic<int> g_fail_worker_start_after{-1};
}  // namespace

int resolve_thread_count(int64_t requested, const char* what) {
  if (requested < 0 || requested > kMaxThreads) {
    throw Error(std::string(what) + ": " + std::to_string(requested) + " is out of range (0 = all hardware threads, at most " +
                std::to_string(kMaxThreads) + ")");
  }
  if (requested == 0) return int(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1u, unsigned(kMaxThreads)));
  return int(requested);
}

void ThreadPool::fail_worker_start_after_for_tests(int n) { g_fail_worker_start_after.store(n); }

struct ThreadPool::Impl {
  int threads = 1;
  std::vector<std::thread> workers;
  std::mutex job_mutex;  // one job at a time (several contexts may share a model's pool)

  // claim = (generation << 32) | next chunk index. A CAS that sees another generation fails.
  std::atomic<uint64_t> claim{0};
  std::atomic<int> done_chunks{0};
  std::atomic<int> sleepers{0};
  std::mutex m;
  std::condition_variable wake;
  bool stop = false;

  // The current job (written by the caller before publishing its generation in `claim`).
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  std::atomic<int> chunks{0};  // read by try_claim before a claim succeeds, so atomic
  std::exception_ptr error;
  std::mutex error_mutex;

  // Claims the next chunk of generation `gen`; -1 when that job has no chunk left (or is over).
  int try_claim(uint32_t gen) {
    uint64_t c = claim.load(std::memory_order_acquire);
    for (;;) {
      if (uint32_t(c >> 32) != gen) return -1;
      const int idx = int(uint32_t(c));
      if (idx >= chunks) return -1;
      if (claim.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return idx;
    }
  }

  void run_chunk(int c) {
    const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    if (begin < end) {
      try {
        (*fn)(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
    done_chunks.fetch_add(1, std::memory_order_acq_rel);
  }

  void drain(uint32_t gen) {
    for (int c; (c = try_claim(gen)) >= 0;) run_chunk(c);
  }

  void worker() {
    t_inside_pool = true;
    uint32_t seen = 0;
    for (;;) {
      uint32_t g = uint32_t(claim.load(std::memory_order_acquire) >> 32);
      for (int i = 0; g == seen && i < kSpinIterations; ++i) {
        MIXQ_CPU_RELAX();
        g = uint32_t(claim.load(std::memory_order_acquire) >> 32);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m);
        sleepers.fetch_add(1, std::memory_order_acq_rel);
        wake.wait(lk, [&] { return stop || uint32_t(claim.load(std::memory_order_acquire) >> 32) != seen; });
        sleepers.fetch_sub(1, std::memory_order_acq_rel);
        if (stop) return;
        g = uint32_t(claim.load(std::memory_order_acquire) >> 32);
      }
      seen = g;
      drain(g);
    }
  }
};

namespace {
// Stops and joins the workers started so far, then frees the state they used.
void stop_and_free(ThreadPool::Impl* impl) {
  {
    std::lock_guard<std::mutex> lk(impl->m);
    impl->stop = true;
  }
  impl->wake.notify_all();
  for (auto& t : impl->workers) t.join();
  delete impl;
}
}  // namespace

ThreadPool::ThreadPool(int threads) : impl(nullptr) {
  threads = resolve_thread_count(threads < 0 ? 0 : threads);
  // Workers see only the Impl (never `this`), and a failed start stops those already running before the exception
  // leaves: a constructor that throws leaves no thread behind using a half-built object.
  Impl* state = new Impl;
  state->threads = threads;
  try {
    state->workers.reserve(size_t(threads - 1));
    for (int i = 1; i < threads; ++i) {
      const int fail_after = g_fail_worker_start_after.load();
      if (fail_after >= 0 && i > fail_after) {
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "test hook");
      }
      state->workers.emplace_back([state] { state->worker(); });
    }
  } catch (const std::system_error& e) {
    const size_t started = state->workers.size();
    stop_and_free(state);
    throw Error("threads: cannot start " + std::to_string(threads) + " threads (the system refused after " +
                std::to_string(started + 1) + ": " + e.code().message() + "); ask for fewer (at most " +
                std::to_string(kMaxThreads) + ", 0 = all hardware threads)");
  } catch (...) {
    stop_and_free(state);
    throw;
  }
  impl = state;
}

ThreadPool::~ThreadPool() { stop_and_free(impl); }

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
  impl->chunks.store(int(std::min<int64_t>(impl->threads, n)), std::memory_order_relaxed);
  impl->error = nullptr;
  impl->done_chunks.store(0, std::memory_order_relaxed);
  const uint32_t gen = uint32_t(impl->claim.load(std::memory_order_relaxed) >> 32) + 1;
  {
    // Publishing under the mutex pairs with the sleepers' predicate check (no lost wake-up).
    std::lock_guard<std::mutex> lk(impl->m);
    impl->claim.store(uint64_t(gen) << 32, std::memory_order_release);
  }
  if (impl->sleepers.load(std::memory_order_acquire) > 0) impl->wake.notify_all();
  t_inside_pool = true;
  impl->drain(gen);
  t_inside_pool = false;
  // Every chunk is claimed now; wait for the ones other threads are still running.
  for (int spins = 0; impl->done_chunks.load(std::memory_order_acquire) < impl->chunks; ++spins) {
    if (spins < kSpinIterations) MIXQ_CPU_RELAX();
    else std::this_thread::yield();
  }
  if (impl->error) std::rethrow_exception(impl->error);
}

}  // namespace mixq
