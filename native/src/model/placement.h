// Placement: the only module that knows there are several devices. Before anything is loaded it maps
//   (a) layer split — contiguous decoder layers per device, in proportions given (--split) or from the devices'
//       memory; or
//   (b) expert parallel — every layer's norms, attention and router on the first device, each layer's experts
//       spread over all devices in contiguous blocks; tokens go to the devices holding their experts and the
//       weighted sum is combined on the layer's device in a fixed order (deterministic),
// with the embedding on the first device and the final norm + lm_head on the last. The plan says where every
// tensor lives and the bytes per device, and fails naming the device and the shortfall when the model does not fit.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "core/device.h"

namespace mixq {

enum class PlacementMode { Single, Layer, Expert };
const char* placement_mode_name(PlacementMode m);  // "single", "layer", "expert"
PlacementMode parse_placement_mode(const std::string& s);  // "layer" | "expert"; throws naming the value

// Bytes of the model's parts, read from the checkpoint's header before anything is resident.
struct ModelBytes {
  size_t embed = 0;
  size_t head = 0;                          // final norm + lm_head (0 for lm_head when tied to the embedding)
  std::vector<size_t> layer;                // [layer]: norms, attention, router
  std::vector<std::vector<size_t>> expert;  // [layer][expert]: w1 + w2 + w3
  size_t kv_per_layer = 0;                  // KV cache of one layer at the context's capacity
};

struct PlacementRequest {
  std::vector<Device> devices;         // at least one; a single device means no split
  PlacementMode mode = PlacementMode::Layer;
  std::vector<double> split;           // proportions per device (> 0); empty: from `memory`, else equal
  std::vector<size_t> memory;          // bytes usable per device; empty: unlimited (no fit check)
};

struct Plan {
  PlacementMode mode = PlacementMode::Single;
  std::vector<Device> devices;
  int embed = 0;                           // device index of the embedding
  int head = 0;                            // device index of the final norm and lm_head
  std::vector<int> layer;                  // [layer]: device index of norms, attention, router, KV cache
  std::vector<std::vector<int>> expert;    // [layer][expert]: device index
  std::vector<size_t> bytes;               // [device]: planned weights + KV cache

  // Devices holding experts of `layer`, ascending.
  std::vector<int> expert_devices(int layer) const;
  std::string summary() const;  // one line: "layer split over cpu:0 (layers 0-1), cpu:1 (layers 2-3, lm_head)"
};

Plan plan_placement(const ModelBytes& bytes, const PlacementRequest& req);

}  // namespace mixq
