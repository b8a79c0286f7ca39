// profiler_bench: what one op's ProfileScope costs, profiling off and on (ns per scope, single thread), next to an
// empty loop. The off figure times the flag test at entry and exit that every backend op pays.
//   profiler_bench [--iterations N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/profiler.h"

namespace {

volatile uint64_t sink;  // keeps the loops from being optimised away

template <class F>
double ns_per_iteration(long n, F&& body) {
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i) body(i);
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / double(n);
}

}  // namespace

int main(int argc, char** argv) {
  long n = 20'000'000;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--iterations") n = std::atol(argv[++i]);
  mixq::Profiler p;
  const double empty = ns_per_iteration(n, [](long i) { sink = sink + uint64_t(i); });
  const double off = ns_per_iteration(n, [&](long i) {
    mixq::ProfileScope s(p, "linear");
    if (s) s.bytes = uint64_t(i);
    sink = sink + uint64_t(i);
  });
  p.set_enabled(true);
  const long n_on = n / 10;
  const double on = ns_per_iteration(n_on, [&](long i) {
    mixq::ProfileScope s(p, (i & 1) ? "linear" : "rms_norm");
    if (s) s.bytes = uint64_t(i);
    sink = sink + uint64_t(i);
  });
  std::printf("{\"iterations\":%ld,\"empty_ns\":%.3f,\"off_ns\":%.3f,\"on_ns\":%.3f,\"off_extra_ns\":%.3f,\"on_extra_ns\":%.3f}\n", n,
              empty, off, on, off - empty, on - empty);
  return 0;
}
