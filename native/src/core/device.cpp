#include "device.h"

#include <cstdlib>

#include "error.h"

namespace mixq {

std::string Device::str() const {
  if (kind == DeviceKind::Cpu) return "cpu:" + std::to_string(index);
  std::string s = "cuda:" + std::to_string(index);
  return logical ? s + "/" + std::to_string(logical) : s;
}

namespace {

// A non-negative decimal of at most 4 digits (no sign, no spaces); -1 otherwise.
int small_number(const std::string& s) {
  if (s.empty() || s.size() > 4) return -1;
  for (char c : s)
    if (c < '0' || c > '9') return -1;
  return std::atoi(s.c_str());
}

}  // namespace

Device Device::parse(const std::string& s) {
  const auto bad = [&]() { return Error("device \"" + s + "\" is not one of cpu, cpu:N, cuda, cuda:N, cuda:N/L"); };
  Device d;
  std::string rest;
  if (s.rfind("cpu", 0) == 0) {
    d.kind = DeviceKind::Cpu;
    rest = s.substr(3);
  } else if (s.rfind("cuda", 0) == 0) {
    d.kind = DeviceKind::Cuda;
    rest = s.substr(4);
  } else {
    throw bad();
  }
  if (rest.empty()) return d;
  if (rest[0] != ':') throw bad();
  rest = rest.substr(1);
  const size_t slash = rest.find('/');
  d.index = small_number(rest.substr(0, slash));
  if (d.index < 0) throw bad();
  if (slash != std::string::npos) {
    if (d.kind != DeviceKind::Cuda) throw bad();
    d.logical = small_number(rest.substr(slash + 1));
    if (d.logical < 0) throw bad();
  }
  return d;
}

std::vector<Device> parse_device_list(const std::string& list) {
  std::vector<Device> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const Device d = Device::parse(item);
    for (const Device& o : out)
      if (o == d) throw Error("device " + d.str() + " is listed twice in \"" + list + "\"");
    out.push_back(d);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace mixq
