// The profiler: counts and totals per op name, the ring buffer of recent events (capacity, order, drops), nothing
// recorded while off, reset; then on the bundled model: every op of the forward pass is counted on its device with
// the expected number of calls, the steps bound their ops on the shared clock, and profiling changes no logit.
#include <algorithm>
#include <cstring>
#include <map>

#include "core/profiler.h"
#include "engine.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

const KernelStats* find(const ProfileSnapshot& s, const std::string& name) {
  for (const KernelStats& k : s.kernels)
    if (k.name == name) return &k;
  return nullptr;
}

void unit_tests() {
  Profiler p(4);
  {
    ProfileScope a(p, "embed");
    check(!a, "off: a scope is inactive");
    a.bytes = 100;
  }
  p.record("linear", 0, 1, 2, 3);
  ProfileSnapshot s = p.snapshot();
  check(!s.enabled && s.kernels.empty() && s.events.empty() && s.dropped_events == 0, "off: nothing recorded");

  p.set_enabled(true);
  for (int i = 0; i < 3; ++i) {
    ProfileScope a(p, "linear");
    if (a) a.bytes = 1000;
  }
  { ProfileScope b(p, "rms_norm"); }
  s = p.snapshot();
  const KernelStats* lin = find(s, "linear");
  const KernelStats* norm = find(s, "rms_norm");
  check(s.enabled && s.kernels.size() == 2 && lin && norm, "on: two op names");
  check(lin && lin->calls == 3 && lin->bytes == 3000 && lin->total_us >= 0, "linear: 3 calls, 3000 bytes");
  check(norm && norm->calls == 1 && norm->bytes == 0, "rms_norm: 1 call, bytes unknown");
  check(s.kernels[0].name == "linear", "statistics in order of first call");
  check(s.events.size() == 4 && s.dropped_events == 0, "ring holds 4 events");
  bool ordered = true;
  for (size_t i = 1; i < s.events.size(); ++i) ordered &= s.events[i].start_us >= s.events[i - 1].start_us;
  check(ordered && std::strcmp(s.events.back().name, "rms_norm") == 0, "events oldest first, the last one last");

  // Events a backend timed itself (a GPU: CUDA events), on stream 1; the ring keeps the newest 4 of 10.
  p.reset();
  for (int i = 0; i < 10; ++i) p.record("gemv", 1, 100.0 * i, 10.0 + i, 64);
  s = p.snapshot();
  check(s.kernels.size() == 1 && s.kernels[0].calls == 10 && s.kernels[0].bytes == 640, "reset, then 10 recorded events counted");
  check(std::abs(s.kernels[0].total_us - 145.0) < 1e-9 && std::abs(s.kernels[0].mean_us() - 14.5) < 1e-9,
        "total 145 µs, mean 14.5 µs");
  check(s.events.size() == 4 && s.dropped_events == 6, "ring of 4: 4 kept, 6 dropped");
  check(s.events.front().start_us == 600 && s.events.back().start_us == 900 && s.events.back().stream == 1 &&
            s.events.back().dur_us == 19,
        "the newest 4 kept, oldest first, with their stream and duration");

  p.set_enabled(false);
  p.record("gemv", 1, 0, 1, 0);
  { ProfileScope a(p, "gemv"); }
  s = p.snapshot();
  check(!s.enabled && s.kernels[0].calls == 10, "off again: nothing more recorded, statistics kept");
  p.reset();
  check(p.snapshot().kernels.empty() && p.snapshot().events.empty(), "reset while off empties it");
}

std::vector<float> run(Context& ctx, const std::vector<int32_t>& prompt, int decode) {
  EvalCapture cap;
  ctx.truncate(0);
  ctx.eval(prompt, cap);
  std::vector<float> all = cap.logits;
  for (int i = 0; i < decode; ++i) {
    const int32_t tok = int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin());
    ctx.eval({tok}, cap);
    all.insert(all.end(), cap.logits.begin(), cap.logits.end());
  }
  return all;
}

void model_tests(const std::vector<std::string>& devices) {
  EngineOptions o;
  o.threads = 2;
  o.devices = devices;
  auto model = Model::load(tiny_model_dir(), o);
  const std::string tag = devices.empty() ? "cpu: " : "cpu:0 + cpu:1 layer split: ";
  const int L = model->config().num_hidden_layers;
  Context ctx(model, 64);
  const std::vector<int32_t> prompt = {1, 415, 2936, 906, 285};
  const std::vector<float> off = run(ctx, prompt, 3);
  ModelProfile p = model->profile();
  size_t recorded = p.steps.kernels.size();
  for (const DeviceProfile& d : p.devices) recorded += d.profile.kernels.size() + d.profile.events.size();
  check(!p.enabled && recorded == 0, tag + "off: nothing recorded by a prefill and 3 decode steps");

  model->set_profiling(true);
  const std::vector<float> on = run(ctx, prompt, 3);
  p = model->profile();
  check(on == off, tag + "profiling changes no logit");
  check(p.enabled && p.devices.size() == (devices.empty() ? 1 : devices.size()), tag + "one profile per device");
  // Sum of each op's calls over the devices: per eval, per layer 2 norms, 5 linears (q k v o router), 2 ropes,
  // attention, router, moe_experts (one device holds a layer's experts here), moe_combine, 2 adds; plus the embedding,
  // the final norm and the lm_head. 4 evals.
  std::map<std::string, uint64_t> calls;
  for (const DeviceProfile& d : p.devices) {
    check(d.kind == "cpu" && !d.backend.empty(), tag + d.device + " is a cpu device with a description");
    for (const KernelStats& k : d.profile.kernels) {
      calls[k.name] += k.calls;
      check(k.calls > 0 && k.total_us > 0, tag + d.device + " " + k.name + ": " + std::to_string(k.calls) + " calls, " +
                                                fmt(k.total_us) + " µs");
    }
  }
  const uint64_t evals = 4;
  const std::map<std::string, uint64_t> want = {
      {"embed", evals},           {"rms_norm", evals * (2 * L + 1)}, {"linear", evals * (5 * L + 1)},
      {"rope", evals * 2 * L},    {"attention", evals * L},          {"router", evals * L},
      {"moe_experts", evals * L}, {"moe_combine", evals * L},        {"add", evals * 2 * L}};
  for (const auto& [name, n] : want) {
    check(calls[name] == n, tag + name + " called " + std::to_string(n) + " times", "got " + std::to_string(calls[name]));
  }
  // Bytes known for the ops that stream memory: linear's weights dominate.
  for (const DeviceProfile& d : p.devices)
    for (const KernelStats& k : d.profile.kernels)
      if (k.name == "linear") check(k.bytes > 0, tag + d.device + " linear reports its bytes");
  check(p.steps.kernels.size() == 2 && p.steps.events.size() == 4 && std::strcmp(p.steps.events[0].name, "prefill") == 0 &&
            std::strcmp(p.steps.events[3].name, "decode") == 0,
        tag + "steps: one prefill, then 3 decode");
  // The last decode step bounds the ops that ran in it, on every device.
  const ProfileEvent& last = p.steps.events.back();
  size_t inside = 0, overrun = 0;
  for (const DeviceProfile& d : p.devices)
    for (const ProfileEvent& e : d.profile.events)
      if (e.start_us >= last.start_us) {
        inside++;
        overrun += e.start_us + e.dur_us > last.start_us + last.dur_us + 1e-3;
      }
  check(inside >= size_t(L) * 14 && overrun == 0,
        tag + "the last decode step holds its " + std::to_string(inside) + " ops, each ending inside it");

  model->reset_profile();
  p = model->profile();
  check(p.enabled && p.steps.events.empty() && p.devices[0].profile.kernels.empty(), tag + "reset empties every device");
  model->set_profiling(false);
  run(ctx, prompt, 1);
  check(model->profile().devices[0].profile.events.empty(), tag + "off again: nothing recorded");
}

}  // namespace

int main() {
  unit_tests();
  model_tests({});
  model_tests({"cpu:0", "cpu:1"});
  return finish();
}
