// The fixture models on the GPU (CUDA backend) — Mixtral and Qwen3-MoE, bf16 and AWQ int4: last logits within 2e-2
// of transformers' reference, greedy_32 identical for at least 6 of 7 (Mixtral) / 5 of 6 (Qwen) prompts, the AWQ model's perplexity within 0.5% of the
// CPU path's, and layer split / expert parallel over two and three logical devices of one GPU (cuda:0, cuda:0/1,
// cuda:0/2) giving the one-device logits and greedy tokens bitwise, their decode steps recorded as one graph
// across the devices, and copies staged through pinned host memory (MIXQ_CUDA_STAGED_COPIES=1) giving the direct
// copies' logits. Skips (77) without a CUDA backend or GPU, as on CI.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/backend.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "engine.h"
#include "perplexity.h"
#include "quant/quantize.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;

namespace {

std::shared_ptr<Model> load(const std::string& dir, std::vector<std::string> devices, const std::string& placement) {
  EngineOptions eo;
  eo.devices = std::move(devices);
  eo.placement = placement;
  return Model::load(dir, eo);
}

// `fixture`: the folder under ../shared/fixtures whose reference/ holds transformers' outputs; at least
// `min_greedy` prompts' greedy_32 must be identical.
void check_reference(const std::shared_ptr<Model>& model, const std::string& fixture = "mixq-tiny-code",
                     int min_greedy = 6) {
  const std::string ref_dir = fixtures_dir() + "/" + fixture + "/reference";
  const JsonValue ref = parse_json_file(ref_dir + "/reference.json");
  const SafetensorsFile tensors(ref_dir + "/reference.safetensors");
  const int64_t vocab = model->config().vocab_size;
  int greedy_same = 0, prompts = 0;
  for (const JsonValue& p : ref.find("prompts")->as_array()) {
    const std::string name = p.find("name")->as_string();
    std::vector<int32_t> ids;
    for (const JsonValue& v : p.find("input_ids")->as_array()) ids.push_back(int32_t(v.as_int()));
    Context ctx(model);
    EvalCapture cap;
    ctx.eval(ids, cap);
    const TensorView* last = tensors.find(name + ".last_logits");
    const double err = rel_err(cap.logits.data(), static_cast<const float*>(last->data), size_t(vocab));
    check(err <= 2e-2, name + " on " + model->placement().devices[0].str() + ": last logits rel err " + fmt(err) +
                           " <= 2e-2");
    Context gctx(model);
    GenerateOptions go;
    go.max_tokens = 32;
    go.ignore_eos = true;
    const GenerateResult gr = generate(gctx, ids, go, nullptr, nullptr);
    std::vector<int32_t> want;
    for (const JsonValue& v : p.find("greedy_32")->as_array()) want.push_back(int32_t(v.as_int()));
    greedy_same += gr.tokens == want;
    ++prompts;
  }
  check(greedy_same >= min_greedy && prompts >= min_greedy,
        fixture + ": greedy_32 identical to transformers for " + std::to_string(greedy_same) + " of " +
            std::to_string(prompts) + " prompts (>= " + std::to_string(min_greedy) + ")");
}

double ppl(const std::shared_ptr<Model>& model, const TensorView& ids) {
  Context ctx(model, 512);
  return perplexity(ctx, static_cast<const int32_t*>(ids.data), size_t(ids.numel()), 20, 512, nullptr).ppl;
}

bool bitwise(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::vector<float> prefill_logits(const std::shared_ptr<Model>& model) {
  Context ctx(model, 64);
  EvalCapture cap;
  cap.all_logits = true;
  ctx.eval({1, 822, 1875, 2989, 2987, 1125, 13, 1678, 565, 302, 529}, cap);
  std::vector<float> all = cap.logits;
  ctx.eval({2987}, cap);
  all.insert(all.end(), cap.logits.begin(), cap.logits.end());
  return all;
}

// Two rounds in one context (a prompt, 12 greedy steps; then truncate to 3 tokens, a new prefill, 12 more steps):
// the logits of every step, and how the steps ran.
std::vector<float> decode_rounds(const std::shared_ptr<Model>& model, std::string& mode) {
  Context ctx(model, 128);
  EvalCapture cap;
  const std::vector<int32_t> prompt = {1, 822, 1875, 2989, 2987, 1125, 13, 1678};
  std::vector<float> all;
  for (int round = 0; round < 2; ++round) {
    ctx.truncate(round ? 3 : 0);
    ctx.eval(round ? std::vector<int32_t>(prompt.begin() + 3, prompt.end()) : prompt, cap);
    for (int i = 0; i < 12; ++i) {
      const auto tok = int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin());
      ctx.eval({tok}, cap);
      all.insert(all.end(), cap.logits.begin(), cap.logits.end());
    }
  }
  mode = ctx.step_mode();
  return all;
}

// Decode steps recorded once and replayed as a CUDA graph give bitwise the logits of the same steps launched op by
// op (MIXQ_CUDA_GRAPHS=0), across a second prefill in the same context — one device or several (one graph over
// all of them). Returns the recorded steps' logits.
std::vector<float> check_recorded_steps(const std::shared_ptr<Model>& model, const std::string& what) {
  std::string mode_ops, mode_graph;
  setenv("MIXQ_CUDA_GRAPHS", "0", 1);
  const std::vector<float> ops = decode_rounds(model, mode_ops);
  unsetenv("MIXQ_CUDA_GRAPHS");
  const std::vector<float> graph = decode_rounds(model, mode_graph);
  check(mode_ops == "ops" && mode_graph == "graph",
        what + ": one-token steps ran as '" + mode_graph + "' (graphs on) and '" + mode_ops + "' (MIXQ_CUDA_GRAPHS=0)");
  check(bitwise(ops, graph),
        what + ": 24 decode steps replayed from a graph give bitwise the logits of the steps launched op by op");
  return graph;
}

// 32 greedy tokens after a prompt (the generation loop: argmax on the device, recorded steps).
std::vector<int32_t> greedy(const std::shared_ptr<Model>& model) {
  Context ctx(model, 128);
  GenerateOptions go;
  go.max_tokens = 32;
  go.ignore_eos = true;
  return generate(ctx, {1, 822, 1875, 2989, 2987, 1125, 13, 1678}, go, nullptr, nullptr).tokens;
}

// The model in `dir` under layer split and expert parallel over 2 and 3 logical devices of cuda:0: prefill logits,
// 24 recorded decode steps and 32 greedy tokens bitwise those of one device; the recorded steps bitwise the steps
// run op by op. Then, over 2 devices, copies forced through pinned host memory give the direct copies' results.
void check_logical_devices(const std::string& dir, const std::string& what) {
  auto one = load(dir, {"cuda:0"}, "layer");
  std::string mode;
  const std::vector<float> prefill = prefill_logits(one), steps = decode_rounds(one, mode);
  const std::vector<int32_t> tokens = greedy(one);
  const std::vector<std::vector<std::string>> lists = {{"cuda:0", "cuda:0/1"}, {"cuda:0", "cuda:0/1", "cuda:0/2"}};
  for (const auto& devices : lists)
    for (const char* placement : {"layer", "expert"}) {
      auto m = load(dir, devices, placement);
      const std::string on = what + ", " + m->placement().summary();
      check(bitwise(prefill_logits(m), prefill), on + ": prefill and first decode logits identical to one device");
      check(bitwise(check_recorded_steps(m, on), steps), on + ": 24 recorded decode steps identical to one device");
      check(greedy(m) == tokens, on + ": 32 greedy tokens identical to one device");
    }
  for (const char* placement : {"layer", "expert"}) {
    auto m = load(dir, lists[0], placement);
    setenv("MIXQ_CUDA_STAGED_COPIES", "1", 1);
    std::string staged_mode;
    const std::vector<float> staged_prefill = prefill_logits(m), staged_steps = decode_rounds(m, staged_mode);
    unsetenv("MIXQ_CUDA_STAGED_COPIES");
    const std::string on = what + ", " + m->placement().summary() + ", copies staged through pinned host memory";
    check(bitwise(staged_prefill, prefill) && bitwise(staged_steps, steps) && staged_mode == "graph",
          on + ": prefill and 24 decode steps (recorded: '" + staged_mode + "') identical to direct copies");
  }
}

}  // namespace

// --placement: only the bf16 fixture over logical devices (a run short enough for compute-sanitizer).
int main(int argc, char** argv) {
  bool gpu = false;
  for (const Device& d : available_devices()) gpu |= d.kind == DeviceKind::Cuda;
  if (!gpu) {
    std::printf("SKIPPED: no CUDA backend or no GPU visible\n");
    return 77;
  }
  require_fixtures();
  set_device_checks(true);
  if (argc > 1 && std::strcmp(argv[1], "--placement") == 0) {
    check_logical_devices(tiny_model_dir(), "bf16");
    return finish();
  }
  auto bf16 = load(tiny_model_dir(), {"cuda:0"}, "layer");
  std::printf("# %s\n", bf16->description().c_str());
  check_reference(bf16);
  check_recorded_steps(bf16, "bf16 on cuda:0");
  {  // the Qwen3-MoE fixture: 48 experts top-8, per-head q/k norms, byte-level vocabulary
    auto qwen = load(qwen_model_dir(), {"cuda:0"}, "layer");
    std::printf("# %s\n", qwen->description().c_str());
    check_reference(qwen, "mixq-tiny-qwen3moe", 5);
    check_recorded_steps(qwen, "Qwen3-MoE bf16 on cuda:0");
  }

  check_logical_devices(tiny_model_dir(), "bf16");

  {  // the seed bug made loud: a tensor of logical device cuda:0/1 given to an op of cuda:0
    auto d0 = make_backend(Device::parse("cuda:0")), d1 = make_backend(Device::parse("cuda:0/1"));
    Tensor x = d1->empty(DType::F32, {2, 64}, "planted x");
    Tensor w = d0->empty(DType::F32, {64}, "norm weight"), y = d0->empty(DType::F32, {2, 64}, "y");
    check_throws([&] { d0->rms_norm(x, w, 1e-5f, y); }, {"rms_norm", "on cuda:0", "planted x", "lives on cuda:0/1"},
                 "checker: a tensor of cuda:0/1 given to rms_norm on cuda:0 stops the op, naming op, tensor and devices");
  }

  const std::string tmp = make_temp_dir("gpu-model");
  quant::QuantizeOptions q;
  q.source_dir = tiny_model_dir();
  q.output_dir = tmp + "/awq";
  q.method = "rtn";
  q.group_size = 128;
  quant::quantize_model(q);
  const SafetensorsFile valid(fixtures_dir() + "/valid_ids.safetensors");
  const TensorView& ids = *valid.find("ids");
  auto awq_gpu = load(q.output_dir, {"cuda:0"}, "layer");
  auto awq_cpu = load(q.output_dir, {"cpu:0"}, "layer");
  check_recorded_steps(awq_gpu, "AWQ g128 on cuda:0");
  check_logical_devices(q.output_dir, "AWQ g128");
  {  // Qwen3-MoE in AWQ: 8 routed slots per token through the device-routed int4 GEMV
    q.source_dir = qwen_model_dir();
    q.output_dir = tmp + "/qwen-awq";
    quant::quantize_model(q);
    const SafetensorsFile qvalid(fixtures_dir() + "/qwen3_valid_ids.safetensors");
    auto qg = load(q.output_dir, {"cuda:0"}, "layer"), qc = load(q.output_dir, {"cpu:0"}, "layer");
    check_recorded_steps(qg, "Qwen3-MoE AWQ g128 on cuda:0");
    const double pg = ppl(qg, *qvalid.find("ids")), pc = ppl(qc, *qvalid.find("ids"));
    check(std::abs(pg / pc - 1) <= 5e-3, "Qwen3-MoE AWQ g128 ppl on cuda:0 " + fmt(pg) + " within 0.5% of cpu:0 " + fmt(pc));
  }
  const double p_gpu = ppl(awq_gpu, ids), p_cpu = ppl(awq_cpu, ids);
  check(std::abs(p_gpu / p_cpu - 1) <= 5e-3, "AWQ g128 ppl on cuda:0 " + fmt(p_gpu) + " within 0.5% of cpu:0 " +
                                                 fmt(p_cpu));
  remove_tree(tmp);
  return finish();
}
