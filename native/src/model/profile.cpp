// Model-level profiling: switches every device's Profiler and the step log together and gathers their snapshots
// (engine.h ModelProfile). The ops are timed by the backends themselves (core/profiler.h).
#include <iomanip>
#include <sstream>

#include "core/json.h"
#include "engine.h"
#include "model.h"

namespace mixq {

void Model::set_profiling(bool on) {
  for (const auto& be : impl->backends) be->profiler().set_enabled(on);
  impl->steps.set_enabled(on);
}

bool Model::profiling() const { return impl->steps.enabled(); }

void Model::reset_profile() {
  for (const auto& be : impl->backends) be->profiler().reset();
  impl->steps.reset();
}

ModelProfile Model::profile() const {
  ModelProfile p;
  p.enabled = profiling();
  for (const auto& be : impl->backends) {
    const Device d = be->device();
    p.devices.push_back({d.str(), d.kind == DeviceKind::Cuda ? "cuda" : "cpu", be->name(), be->profiler().snapshot()});
  }
  p.steps = impl->steps.snapshot();
  return p;
}

std::string profile_json(const ModelProfile& p, const std::map<std::string, double>& copy_gbps) {
  std::ostringstream s;
  s.precision(6);
  s << "{\"devices\":[";
  for (size_t i = 0; i < p.devices.size(); ++i) {
    const DeviceProfile& d = p.devices[i];
    double total_us = 0;
    for (const KernelStats& k : d.profile.kernels) total_us += k.total_us;
    s << (i ? "," : "") << "{\"name\":" << json_quote(d.device) << ",\"kind\":" << json_quote(d.kind)
      << ",\"backend\":" << json_quote(d.backend) << ",\"total_ms\":" << total_us / 1000 << ",\"kernels\":[";
    for (size_t j = 0; j < d.profile.kernels.size(); ++j) {
      const KernelStats& k = d.profile.kernels[j];
      s << (j ? "," : "") << "{\"name\":" << json_quote(k.name) << ",\"calls\":" << k.calls
        << ",\"total_ms\":" << k.total_us / 1000 << ",\"mean_us\":" << k.mean_us();
      if (k.bytes > 0 && k.total_us > 0) s << ",\"bytes\":" << k.bytes << ",\"gbps\":" << double(k.bytes) / (k.total_us * 1e3);
      s << "}";
    }
    s << "]}";
  }
  s << "],\"ceilings\":{\"copy_gbps\":{";
  size_t i = 0;
  for (const auto& [device, gbps] : copy_gbps) s << (i++ ? "," : "") << json_quote(device) << ":" << gbps;
  s << "}}}";
  return s.str();
}

}  // namespace mixq
