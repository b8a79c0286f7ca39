#include "placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace mixq {

const char* placement_mode_name(PlacementMode m) {
  switch (m) {
    case PlacementMode::Single: return "single";
    case PlacementMode::Layer: return "layer";
    case PlacementMode::Expert: return "expert";
  }
  return "?";
}

PlacementMode parse_placement_mode(const std::string& s) {
  if (s == "layer") return PlacementMode::Layer;
  if (s == "expert") return PlacementMode::Expert;
  throw Error("placement \"" + s + "\" is not one of layer, expert");
}

namespace {

std::string mib(size_t b) { return std::to_string((b + (1 << 20) - 1) >> 20) + " MiB"; }

// Normalised shares per device: the split given, else the memory given, else equal.
std::vector<double> shares(const PlacementRequest& req) {
  const size_t D = req.devices.size();
  std::vector<double> s(D, 1.0);
  if (!req.split.empty()) {
    if (req.split.size() != D) {
      throw Error("placement: --split has " + std::to_string(req.split.size()) + " parts for " + std::to_string(D) +
                  " devices");
    }
    for (double v : req.split)
      if (!(v > 0) || !std::isfinite(v)) throw Error("placement: every --split part must be a number > 0");
    s = req.split;
  } else if (req.memory.size() == D) {
    for (size_t i = 0; i < D; ++i) s[i] = double(req.memory[i]);
    if (std::accumulate(s.begin(), s.end(), 0.0) <= 0) s.assign(D, 1.0);
  }
  const double sum = std::accumulate(s.begin(), s.end(), 0.0);
  for (double& v : s) v /= sum;
  return s;
}

// Item i of `sizes` goes to the device whose share of the running total holds the item's midpoint:
// contiguous blocks, in proportion to `share` (every device with a share gets at least the items it can).
std::vector<int> contiguous_blocks(const std::vector<size_t>& sizes, const std::vector<double>& share) {
  const double total = double(std::accumulate(sizes.begin(), sizes.end(), size_t(0)));
  std::vector<int> out(sizes.size());
  double before = 0, bound = 0;
  size_t dev = 0;
  bound = share[0] * total;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double mid = before + double(sizes[i]) / 2;
    while (dev + 1 < share.size() && mid > bound) bound += share[++dev] * total;
    out[i] = int(dev);
    before += double(sizes[i]);
  }
  return out;
}

std::string ranges(const std::vector<int>& owner, int dev) {
  std::string s;
  for (size_t i = 0; i < owner.size(); ++i) {
    if (owner[i] != dev || (i > 0 && owner[i - 1] == dev)) continue;
    size_t j = i;
    while (j + 1 < owner.size() && owner[j + 1] == dev) ++j;
    if (!s.empty()) s += ",";
    s += j == i ? std::to_string(i) : std::to_string(i) + "-" + std::to_string(j);
  }
  return s;
}

}  // namespace

std::vector<int> Plan::expert_devices(int l) const {
  std::vector<int> d = expert[size_t(l)];
  std::sort(d.begin(), d.end());
  d.erase(std::unique(d.begin(), d.end()), d.end());
  return d;
}

std::string Plan::summary() const {
  std::string s = std::string(placement_mode_name(mode)) + " placement over ";
  for (size_t i = 0; i < devices.size(); ++i) {
    if (i) s += ", ";
    s += devices[i].str() + " (";
    std::string parts;
    if (embed == int(i)) parts += "embed";
    const std::string ls = ranges(layer, int(i));
    if (!ls.empty()) parts += (parts.empty() ? "" : "; ") + std::string("layers ") + ls;
    if (mode == PlacementMode::Expert && !expert.empty()) {
      const std::string es = ranges(expert[0], int(i));
      if (!es.empty()) parts += (parts.empty() ? "" : "; ") + std::string("experts ") + es;
    }
    if (head == int(i)) parts += (parts.empty() ? "" : "; ") + std::string("lm_head");
    s += parts + "; " + mib(bytes[i]) + ")";
  }
  return s;
}

Plan plan_placement(const ModelBytes& mb, const PlacementRequest& req) {
  const size_t D = req.devices.size(), L = mb.layer.size();
  if (D == 0) throw Error("placement: no device given");
  if (!req.memory.empty() && req.memory.size() != D) throw Error("placement: memory given for the wrong device count");
  Plan p;
  p.devices = req.devices;
  p.mode = D == 1 ? PlacementMode::Single : req.mode;
  const std::vector<double> share = shares(req);
  p.embed = 0;
  p.head = int(D) - 1;
  p.layer.assign(L, 0);
  p.expert.resize(L);
  for (size_t l = 0; l < L; ++l) p.expert[l].assign(mb.expert[l].size(), 0);
  if (p.mode == PlacementMode::Layer) {
    std::vector<size_t> per_layer(L);
    for (size_t l = 0; l < L; ++l) {
      per_layer[l] = mb.layer[l] + mb.kv_per_layer +
                     std::accumulate(mb.expert[l].begin(), mb.expert[l].end(), size_t(0));
    }
    p.layer = contiguous_blocks(per_layer, share);
    for (size_t l = 0; l < L; ++l) p.expert[l].assign(mb.expert[l].size(), p.layer[l]);
  } else if (p.mode == PlacementMode::Expert) {
    for (size_t l = 0; l < L; ++l) p.expert[l] = contiguous_blocks(mb.expert[l], share);
  }
  p.bytes.assign(D, 0);
  p.bytes[size_t(p.embed)] += mb.embed;
  p.bytes[size_t(p.head)] += mb.head;
  for (size_t l = 0; l < L; ++l) {
    p.bytes[size_t(p.layer[l])] += mb.layer[l] + mb.kv_per_layer;
    for (size_t e = 0; e < mb.expert[l].size(); ++e) p.bytes[size_t(p.expert[l][e])] += mb.expert[l][e];
  }
  for (size_t i = 0; i < D && !req.memory.empty(); ++i) {
    if (p.bytes[i] > req.memory[i]) {
      throw Error("the model does not fit: " + req.devices[i].str() + " needs " + mib(p.bytes[i]) +
                  " (weights + KV cache, " + std::string(placement_mode_name(p.mode)) + " placement) but has " +
                  mib(req.memory[i]) + " — short by " + mib(p.bytes[i] - req.memory[i]) +
                  "; add devices, shorten the context or change --split");
    }
  }
  return p;
}

}  // namespace mixq
