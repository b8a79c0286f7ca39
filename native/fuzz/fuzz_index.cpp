// libFuzzer target: model.safetensors.index.json through WeightStore::open, in a folder with two small valid shards
// ("a.safetensors": tensors x, y; "b.safetensors": tensor z). A store that opens must resolve every name it lists;
// any other input must throw mixq::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "error.h"
#include "safetensors.h"

namespace {
std::string make_dir() {
  char tmpl[] = "/tmp/mixq-fuzz-index-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  static float values[6] = {1, 2, 3, 4, 5, 6};
  auto view = [](const char* name, std::vector<int64_t> shape, size_t n) {
    mixq::TensorView t;
    t.name = name;
    t.dtype = mixq::DType::F32;
    t.shape = std::move(shape);
    t.data = values;
    t.nbytes = n * 4;
    return t;
  };
  mixq::write_safetensors(dir + "/a.safetensors", {view("x", {2, 2}, 4), view("y", {2}, 2)});
  mixq::write_safetensors(dir + "/b.safetensors", {view("z", {3}, 3)});
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = make_dir();
  {
    std::ofstream f(dir + "/model.safetensors.index.json", std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  }
  try {
    auto store = mixq::WeightStore::open(dir);
    for (const std::string& n : store->names()) {
      const mixq::TensorView& t = store->get(n);
      if (t.nbytes != size_t(t.numel()) * 4) __builtin_trap();
    }
  } catch (const mixq::Error&) {
  }
  return 0;
}
