// Where a tensor lives. `cpu:N` is a virtual CPU device (its own arena; several of them test placement
// without GPUs); `cuda:N` is GPU N; `cuda:N/L` is logical device L on GPU N (its own stream and pool).
#pragma once
#include <string>
#include <vector>

namespace mixq {

enum class DeviceKind { Cpu, Cuda };

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;    // cpu: virtual device number; cuda: GPU ordinal
  int logical = 0;  // cuda: logical device on that GPU
  std::string str() const;  // "cpu:0", "cuda:1", "cuda:0/1"
  // Accepts "cpu" (= cpu:0), "cpu:N", "cuda" (= cuda:0), "cuda:N", "cuda:N/L"; throws mixq::Error naming `s`.
  static Device parse(const std::string& s);
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index && logical == o.logical; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// "cpu:0,cpu:1" → devices; throws naming the bad entry or a repeated device.
std::vector<Device> parse_device_list(const std::string& list);

}  // namespace mixq
