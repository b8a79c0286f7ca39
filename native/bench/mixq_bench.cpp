// mixq_bench: the engine benchmark as a plain C++ program (no Node), printing one JSON object.
//   mixq_bench --model DIR | --synthetic mixtral-8x7b|qwen3-coder-30b-a3b|tiny [--layers N] [--weights bf16|awq]
//              [--prefill N] [--decode N] [--threads N] [--memcpy-mib N]
//              [--device D | --devices cpu:0,cpu:1,...] [--placement layer|expert] [--split 1,1] [--profile]
// --profile: time every op of the measured prefill + decode ("profile" in the JSON: per device and op).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"
#include "core/device.h"
#include "core/error.h"

namespace {

// "1,2.5" → {1, 2.5}; exits 2 naming the flag on anything but positive numbers.
std::vector<double> parse_split(const char* s) {
  std::vector<double> out;
  std::string item;
  const std::string str = s;
  for (size_t i = 0; i <= str.size(); ++i) {
    if (i < str.size() && str[i] != ',') {
      item += str[i];
      continue;
    }
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(v > 0)) {
      std::fprintf(stderr, "mixq_bench: --split takes positive numbers separated by commas, not \"%s\"\n", s);
      std::exit(2);
    }
    out.push_back(v);
    item.clear();
  }
  return out;
}

}  // namespace

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
    else if (a == "--device") o.device = need(i);
    else if (a == "--devices") {
      const char* list = need(i);
      try {
        for (const mixq::Device& d : mixq::parse_device_list(list)) o.devices.push_back(d.str());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "mixq_bench: --devices: %s\n", e.what());
        return 2;
      }
    } else if (a == "--placement") o.placement = need(i);
    else if (a == "--split") o.split = parse_split(need(i));
    else if (a == "--profile") o.profile = true;
    else if (a == "--help" || a == "-h") {
      std::printf("usage: mixq_bench (--model DIR | --synthetic mixtral-8x7b|qwen3-coder-30b-a3b|tiny [--layers N] "
                  "[--weights bf16|awq]) [--prefill N] "
                  "[--decode N] [--threads N] [--memcpy-mib N] [--device D | --devices cpu:0,cpu:1] [--placement layer|expert] "
                  "[--split 1,1] [--profile]\n");
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
