// mixq_bench: the engine benchmark as a plain C++ program (no Node), printing one JSON object.
//   mixq_bench --model DIR | --synthetic mixtral-8x7b|tiny [--layers N] [--weights bf16|awq]
//              [--prefill N] [--decode N] [--threads N] [--memcpy-mib N]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bench.h"
#include "error.h"

int main(int argc, char** argv) {
  mixq::BenchOptions o;
  auto need = [&](int& i) -> const char* {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "mixq_bench: %s needs a value\n", argv[i]);
      std::exit(2);
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model") o.model_dir = need(i);
    else if (a == "--synthetic") o.synthetic = need(i);
    else if (a == "--layers") o.layers = std::atoi(need(i));
    else if (a == "--weights") o.weights = need(i);
    else if (a == "--prefill") o.prefill_tokens = std::atoi(need(i));
    else if (a == "--decode") o.decode_tokens = std::atoi(need(i));
    else if (a == "--threads") o.threads = std::atoi(need(i));
    else if (a == "--memcpy-mib") o.memcpy_bytes = size_t(std::atol(need(i))) << 20;
    else if (a == "--help" || a == "-h") {
      std::printf("usage: mixq_bench (--model DIR | --synthetic mixtral-8x7b|tiny [--layers N] [--weights bf16|awq]) [--prefill N] "
                  "[--decode N] [--threads N] [--memcpy-mib N]\n");
      return 0;
    } else {
      std::fprintf(stderr, "mixq_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (o.model_dir.empty() && o.synthetic.empty()) {
    std::fprintf(stderr, "mixq_bench: give --model DIR or --synthetic NAME\n");
    return 2;
  }
  try {
    const mixq::BenchResult r = mixq::run_bench(o);
    std::printf("%s\n", mixq::bench_result_json(r).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mixq_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
