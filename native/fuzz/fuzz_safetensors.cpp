// libFuzzer target: a whole safetensors file (8-byte length, JSON header, data region) through SafetensorsFile.
// A file that loads must give views inside the mapping whose size is dtype × shape; any other input must throw
// mixq::Error. The input is written to a memfd and opened by path, as the engine opens shards.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "error.h"
#include "safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz.safetensors", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != ssize_t(size)) return 0;
  try {
    mixq::SafetensorsFile f(path);
    const auto* base = static_cast<const unsigned char*>(f.tensors().empty() ? nullptr : f.tensors()[0].data);
    for (const mixq::TensorView& t : f.tensors()) {
      const auto* p = static_cast<const unsigned char*>(t.data);
      if (t.nbytes != size_t(t.numel()) * mixq::dtype_size(t.dtype)) __builtin_trap();
      if (t.nbytes > 0 && (p < base - size || p + t.nbytes > base + size)) __builtin_trap();
      unsigned sum = 0;
      for (size_t i = 0; i < t.nbytes; ++i) sum += p[i];  // every byte of a view is readable
      if (sum == 0xdeadbeef) __builtin_trap();
      if (f.find(t.name) == nullptr) __builtin_trap();
    }
  } catch (const mixq::Error&) {
  }
  return 0;
}
