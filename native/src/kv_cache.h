// f32 KV cache of one sequence: k, v [layer][pos][kv_heads*head_dim] (keys stored after RoPE).
#pragma once
#include <cstdint>
#include <vector>

namespace mixq {

struct KvCache {
  int layers = 0;
  int capacity = 0;   // positions
  int64_t kv_dim = 0; // kv_heads * head_dim
  std::vector<float> k, v;

  void init(int n_layers, int n_capacity, int64_t dim) {
    layers = n_layers;
    capacity = n_capacity;
    kv_dim = dim;
    k.assign(size_t(layers) * size_t(capacity) * size_t(kv_dim), 0.f);
    v.assign(k.size(), 0.f);
  }
  float* k_layer(int l) { return k.data() + size_t(l) * size_t(capacity) * size_t(kv_dim); }
  float* v_layer(int l) { return v.data() + size_t(l) * size_t(capacity) * size_t(kv_dim); }
};

}  // namespace mixq
