// The backend registry, the device checker and the Backend helpers shared by every device kind.
#include "backend.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "error.h"

namespace mixq {

namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::vector<BackendFactory>& registry() {
  static std::vector<BackendFactory> r;
  return r;
}

std::atomic<int>& checks_flag() {
  static std::atomic<int> flag{[] {
    const char* e = std::getenv("MIXQ_CHECK_DEVICES");
    return (e && *e && std::strcmp(e, "0") != 0) ? 1 : 0;
  }()};
  return flag;
}

}  // namespace

bool register_backend(BackendFactory f) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry().push_back(std::move(f));
  return true;
}

bool backend_registered(DeviceKind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (const BackendFactory& f : registry())
    if (f.kind == kind) return true;
  return false;
}

std::vector<Device> available_devices() {
  std::vector<BackendFactory> factories;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    factories = registry();
  }
  std::vector<Device> out;
  for (DeviceKind kind : {DeviceKind::Cpu, DeviceKind::Cuda})
    for (const BackendFactory& f : factories)
      if (f.kind == kind)
        for (const Device& d : f.devices()) out.push_back(d);
  return out;
}

std::unique_ptr<Backend> make_backend(const Device& d, const BackendOptions& opts) {
  BackendFactory factory;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    for (const BackendFactory& f : registry())
      if (f.kind == d.kind) factory = f;
  }
  if (!factory.make) {
    throw Error("device " + d.str() + ": this build has no " +
                (d.kind == DeviceKind::Cuda ? std::string("CUDA backend (nvcc was not found at build time)")
                                            : std::string("CPU backend")));
  }
  return factory.make(d, opts);
}

bool device_checks_enabled() { return checks_flag().load(std::memory_order_relaxed) != 0; }
void set_device_checks(bool on) { checks_flag().store(on ? 1 : 0); }

void check_devices(const char* op, const Device& dev, std::initializer_list<NamedTensor> tensors) {
  if (!device_checks_enabled()) return;
  for (const NamedTensor& nt : tensors) {
    if (!nt.t->buffer) throw Error(std::string(op) + " on " + dev.str() + ": tensor " + nt.role + " has no storage");
    const Device td = nt.t->device();
    if (td != dev) {
      throw Error(std::string(op) + " on " + dev.str() + ": tensor " + nt.role +
                  (nt.t->name.empty() ? std::string() : " (" + nt.t->name + ")") + " lives on " + td.str());
    }
  }
}

void check_linear_device(const char* op, const Device& dev, const Linear& w) {
  if (device_checks_enabled() && w.device != dev) {
    throw Error(std::string(op) + " on " + dev.str() + ": weight " + w.name + " lives on " + w.device.str());
  }
}

Tensor Backend::empty(DType dtype, std::vector<int64_t> shape, std::string name) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.name = std::move(name);
  for (int64_t d : t.shape)
    if (d < 0) throw Error("tensor " + t.name + ": negative dimension in " + t.shape_str());
  t.buffer = alloc(t.nbytes());
  return t;
}

Tensor Backend::upload_f32(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<float> v(static_cast<size_t>(n));
  const auto* p16 = static_cast<const uint16_t*>(t.data);
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::BF16: v[size_t(i)] = bf16_to_f32(p16[i]); break;
      case DType::F16: v[size_t(i)] = f16_to_f32(p16[i]); break;
      case DType::F32: v[size_t(i)] = static_cast<const float*>(t.data)[i]; break;
      default: throw Error(t.file + ": tensor " + t.name + " has unsupported dtype " + dtype_name(t.dtype));
    }
  }
  Tensor out = empty(DType::F32, {n}, t.name);
  from_host(v.data(), v.size() * sizeof(float), out);
  return out;
}

}  // namespace mixq
