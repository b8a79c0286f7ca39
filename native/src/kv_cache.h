// f32 KV cache of one sequence: k, v [layer][pos][kv_heads*head_dim] (keys stored after RoPE).
// The buffers come from calloc, which for large sizes maps zero pages lazily: only positions that
// were actually written become resident (a 4096-token Mixtral cache is 1 GiB of address space,
// but a 300-token prompt touches ~75 MiB of it).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "error.h"

namespace mixq {

struct KvCache {
  struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
  };
  using Buffer = std::unique_ptr<float[], FreeDeleter>;

  int layers = 0;
  int capacity = 0;    // positions
  int64_t kv_dim = 0;  // kv_heads * head_dim
  Buffer k, v;

  void init(int n_layers, int n_capacity, int64_t dim) {
    layers = n_layers;
    capacity = n_capacity;
    kv_dim = dim;
    const size_t n = size_t(layers) * size_t(capacity) * size_t(kv_dim);
    k.reset(static_cast<float*>(std::calloc(n, sizeof(float))));
    v.reset(static_cast<float*>(std::calloc(n, sizeof(float))));
    if (n && (!k || !v)) {
      throw Error("cpu: out of memory allocating the KV cache (" + std::to_string(2 * n * sizeof(float)) +
                  " bytes for " + std::to_string(capacity) + " positions)");
    }
  }
  float* k_layer(int l) { return k.get() + size_t(l) * size_t(capacity) * size_t(kv_dim); }
  float* v_layer(int l) { return v.get() + size_t(l) * size_t(capacity) * size_t(kv_dim); }
  size_t bytes() const { return 2 * size_t(layers) * size_t(capacity) * size_t(kv_dim) * sizeof(float); }
};

}  // namespace mixq
