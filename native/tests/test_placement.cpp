// Placement over virtual CPU devices on the fixture: layer split and expert parallel over 2 and 3 devices give
// logits bitwise identical to one device (bf16 and AWQ int4 weights; prefill, decode with KV reuse, perplexity);
// the device checker stops an op whose tensor lives on another device; the planner refuses a model that does not
// fit. Needs only models/ (the fixture model ships in the repo).
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <map>

#include "core/backend.h"
#include "engine.h"
#include "model.h"
#include "perplexity.h"
#include "quant/quantize.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

struct Setup {
  std::string name;
  std::vector<std::string> devices;
  std::string placement;
  std::vector<double> split;
};

std::shared_ptr<Model> load(const std::string& dir, const Setup& s) {
  EngineOptions eo;
  eo.threads = 2;
  eo.devices = s.devices;
  eo.placement = s.placement;
  eo.split = s.split;
  return Model::load(dir, eo);
}

// Logits of a prefill (every position), then of 3 decode steps reusing the cache, then of a re-evaluation after a
// truncation (KV reuse of a prefix), concatenated.
std::vector<float> trace_logits(const std::shared_ptr<Model>& model) {
  const std::vector<int32_t> prompt{1, 822, 1875, 2989, 2987, 1125, 13, 1678, 565, 302, 529, 2987, 2906, 2901};
  Context ctx(model, 64);
  EvalCapture cap;
  cap.all_logits = true;
  ctx.eval(prompt, cap);
  std::vector<float> all = cap.logits;
  cap.all_logits = false;
  const int64_t vocab = model->config().vocab_size;
  int32_t tok = int32_t(std::max_element(cap.logits.end() - vocab, cap.logits.end()) - (cap.logits.end() - vocab));
  for (int step = 0; step < 3; ++step) {
    ctx.eval({tok}, cap);
    all.insert(all.end(), cap.logits.begin(), cap.logits.end());
    tok = int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin());
  }
  ctx.truncate(9);
  ctx.eval({prompt[9], prompt[10]}, cap);
  all.insert(all.end(), cap.logits.begin(), cap.logits.end());
  return all;
}

double ppl_of(const std::shared_ptr<Model>& model) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 3 * 24; ++i) ids.push_back(int32_t(1 + (i * 7919) % 4000));
  Context ctx(model, 32);
  return perplexity(ctx, ids.data(), ids.size(), 3, 24, nullptr).ppl;
}

void check_placements(const std::string& dir, const std::string& weights) {
  const std::vector<Setup> setups = {
      {"layer split over 2", {"cpu:0", "cpu:1"}, "layer", {}},
      {"layer split over 3 (split 1,2,1)", {"cpu:0", "cpu:1", "cpu:2"}, "layer", {1, 2, 1}},
      {"expert parallel over 2", {"cpu:0", "cpu:1"}, "expert", {}},
      {"expert parallel over 3", {"cpu:0", "cpu:1", "cpu:2"}, "expert", {}},
  };
  const std::vector<float> base = trace_logits(load(dir, {"one device", {"cpu:0"}, "layer", {}}));
  const double base_ppl = ppl_of(load(dir, {"one device", {"cpu:0"}, "layer", {}}));
  for (const Setup& s : setups) {
    auto model = load(dir, s);
    const std::vector<float> got = trace_logits(model);
    const bool same = got.size() == base.size() && std::memcmp(got.data(), base.data(), got.size() * 4) == 0;
    check(same, weights + ", " + s.name + ": prefill + decode + KV-reuse logits bitwise identical to one device (" +
                    model->placement().summary() + ")");
    Context steps(model, 16);  // CPU devices never record: their decode steps run op by op, unchanged
    EvalCapture cap;
    for (const std::vector<int32_t>& t : {std::vector<int32_t>{1, 822}, {1875}, {2989}, {2987}}) steps.eval(t, cap);
    check(steps.step_mode() == "ops", weights + ", " + s.name + ": decode steps run op by op (step mode '" + steps.step_mode() + "')");
    const double p = ppl_of(model);
    check(p == base_ppl, weights + ", " + s.name + ": perplexity " + fmt(p) + " == one device " + fmt(base_ppl));
  }
}

void check_plan_shapes(const std::string& dir) {
  auto layer = load(dir, {"", {"cpu:0", "cpu:1"}, "layer", {1, 3}});
  const Plan& p = layer->placement();
  check(p.layer == std::vector<int>({0, 1, 1, 1}) && p.embed == 0 && p.head == 1,
        "layer split 1,3 over 4 layers: layer 0 on cpu:0, layers 1-3 on cpu:1, embed first, lm_head last");
  auto expert = load(dir, {"", {"cpu:0", "cpu:1"}, "expert", {}});
  const Plan& q = expert->placement();
  bool experts_split = true;
  for (const auto& row : q.expert) experts_split &= row == std::vector<int>({0, 0, 0, 0, 1, 1, 1, 1});
  check(experts_split && q.layer == std::vector<int>(4, 0), "expert parallel over 2: experts 0-3 on cpu:0, 4-7 on cpu:1");
  // The planner's bytes against what the arenas hold (weights mapped in place; KV caches of live contexts).
  Context ctx(layer, 0);
  for (const DeviceUsage& u : layer->device_usage()) {
    std::printf("# %s: planned %zu bytes, arena holds %zu bytes (peak %zu)\n", u.device.c_str(), u.planned_bytes,
                u.arena_bytes, u.peak_arena_bytes);
    check(u.arena_bytes <= u.planned_bytes + (1 << 20) && u.arena_bytes * 10 >= u.planned_bytes * 9,
          u.device + ": arena bytes within 10% of the plan (" + std::to_string(u.arena_bytes) + " vs " +
              std::to_string(u.planned_bytes) + ")");
  }
}

void check_device_checker() {
  set_device_checks(true);
  auto d0 = make_backend(Device::parse("cpu:0")), d1 = make_backend(Device::parse("cpu:1"));
  Tensor x = d1->empty(DType::F32, {3, 8}, "planted x");
  Tensor w = d0->empty(DType::F32, {8}, "norm weight");
  Tensor y = d0->empty(DType::F32, {3, 8}, "y");
  check_throws([&] { d0->rms_norm(x, w, 1e-5f, y); }, {"rms_norm", "on cpu:0", "tensor x (planted x)", "lives on cpu:1"},
               "checker: a tensor of cpu:1 given to rms_norm on cpu:0 stops the op, naming op, tensor and devices");
  Tensor a = d0->empty(DType::F32, {3, 8}, "a");
  check_throws([&] { d1->add(a, x, x); }, {"add", "on cpu:1", "tensor a", "lives on cpu:0"},
               "checker: add on cpu:1 with an operand on cpu:0 is caught");
  Tensor moved = d1->empty(DType::F32, {3, 8}, "moved");
  d1->copy(a, moved);  // an explicit copy is the way across
  check(moved.device() == Device::parse("cpu:1"), "an explicit copy moves a tensor from cpu:0 to cpu:1");
}

void check_planner_fit() {
  ModelBytes mb;
  mb.embed = 100 << 20;
  mb.head = 100 << 20;
  mb.layer.assign(4, 50 << 20);
  mb.expert.assign(4, std::vector<size_t>(8, 25 << 20));
  mb.kv_per_layer = 10 << 20;
  PlacementRequest req;
  req.devices = parse_device_list("cpu:0,cpu:1");
  req.mode = PlacementMode::Layer;
  req.split = {1, 1};
  req.memory = {size_t(700) << 20, size_t(300) << 20};
  check_throws([&] { plan_placement(mb, req); }, {"does not fit", "cpu:1", "needs", "short by"},
               "planner: a model larger than a device's memory is refused naming the device and the shortfall");
  req.split.clear();
  req.memory = {size_t(1) << 30, size_t(1) << 30};
  const Plan p = plan_placement(mb, req);
  check(p.bytes[0] + p.bytes[1] == mb.embed + mb.head + 4 * (50 + 10 + 200) * (size_t(1) << 20),
        "planner: bytes per device add up to the model (" + std::to_string(p.bytes[0] >> 20) + " + " +
            std::to_string(p.bytes[1] >> 20) + " MiB)");
  req.split = {1, 0};
  check_throws([&] { plan_placement(mb, req); }, {"--split", "> 0"}, "planner: a zero split part is an error");
  check_throws([&] { parse_device_list("cpu:0,cpu:0"); }, {"cpu:0", "twice"}, "a device listed twice is an error");
  check_throws([&] { Device::parse("gpu:1"); }, {"gpu:1"}, "an unknown device name is an error");
}

}  // namespace

int main() {
  set_device_checks(true);  // always on in tests
  check_device_checker();
  check_planner_fit();
  check_plan_shapes(tiny_model_dir());
  check_placements(tiny_model_dir(), "bf16");
  check_placements(qwen_model_dir(), "qwen3_moe bf16");
  const std::string tmp = make_temp_dir("placement");
  quant::QuantizeOptions q;
  q.source_dir = tiny_model_dir();
  q.output_dir = tmp + "/awq";
  q.method = "rtn";
  q.group_size = 64;
  q.threads = 2;
  quant::quantize_model(q);
  check_placements(q.output_dir, "AWQ int4 g64");
  remove_tree(tmp);
  return finish();
}
