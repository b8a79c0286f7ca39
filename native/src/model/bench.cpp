#include "bench.h"

#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <map>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include <functional>
#include <thread>

#include "core/error.h"
#include "core/json.h"
#include "engine.h"
#include "model.h"

namespace mixq {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// 2 MiB-aligned allocation advised to use transparent huge pages: far fewer page faults while the
// synthetic weights are written, and the streaming reads of decode cross fewer TLB/page boundaries.
// huge = false: 4 KiB pages asked for instead (as a file mapping of a checkpoint gets).
HugeBuffer alloc_huge(size_t bytes, bool huge) {
  // Small tensors (norms, routers, the tiny model) get cache-line alignment, not a 2 MiB page each.
  const size_t align = bytes >= (size_t(4) << 20) ? size_t(2) << 20 : 64;
  const size_t rounded = std::max(align, (bytes + align - 1) / align * align);
  void* p = std::aligned_alloc(align, rounded);
  if (!p) throw Error("bench: out of memory allocating " + std::to_string(bytes) + " bytes of synthetic weights");
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
  if (align > 64) madvise(p, rounded, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#endif
  return HugeBuffer(p);
}

// xorshift64 stream for block `b` of a tensor (blocks are filled in parallel).
inline uint64_t block_seed(uint64_t seed, int64_t b) { return seed * 0x9E3779B97F4A7C15ull + uint64_t(b) * 0xD1B54A32D192ED03ull + 1; }
inline uint64_t xorshift(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// fn(begin, end) over [0, n) in `parts` contiguous chunks, one std::thread each (the caller runs the first).
void parallel_chunks(int parts, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  parts = int(std::max<int64_t>(1, std::min<int64_t>(parts, n)));
  std::vector<std::thread> workers;
  for (int p = 1; p < parts; ++p) workers.emplace_back([&, p] { fn(n * p / parts, n * (p + 1) / parts); });
  fn(0, n / parts);
  for (std::thread& w : workers) w.join();
}

// A benchmark of a broken forward pass measures nothing: NaN or Inf in the logits is an error naming where.
void require_finite_logits(const std::vector<float>& logits, const std::string& when, const std::string& device) {
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) {
      throw Error("bench: logit " + std::to_string(i) + " is not finite after " + when + " on " + device);
    }
  }
}

int hardware_threads(int threads) {
  return threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
}

// Calls gen(stream, i) for every i < n in 4096-element blocks spread over `threads`; every block starts its own
// stream from block_seed(seed, block), so the tensors do not depend on the thread count.
template <class Gen>
void fill_blocks(int threads, int64_t n, uint64_t seed, Gen gen) {
  parallel_chunks(threads, n / 4096 + 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      uint64_t st = block_seed(seed, blk);
      for (int64_t i = blk * 4096; i < std::min(n, (blk + 1) * 4096); ++i) gen(st, i);
    }
  });
}

}  // namespace

void HugeFree::operator()(void* p) const { std::free(p); }

namespace {

// Qwen3-Coder-30B-A3B's config.json (every layer MoE, untied lm_head, per-head q/k norms; q width 4096 ≠ hidden).
ModelConfig qwen3_coder_30b_a3b(int layers) {
  ModelConfig c;
  c.model_type = "qwen3_moe";
  c.hidden_size = 2048;
  c.intermediate_size = 768;  // moe_intermediate_size
  c.num_hidden_layers = layers > 0 ? layers : 48;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 4;
  c.head_dim = 128;
  c.num_local_experts = 128;
  c.num_experts_per_tok = 8;
  c.norm_topk_prob = true;
  c.qk_norm = true;
  c.vocab_size = 151936;
  c.max_position_embeddings = 262144;
  c.rope_theta = 1e7;
  c.rms_norm_eps = 1e-6;
  c.bos_token_id = 151643;
  c.eos_token_id = 151645;
  return c;
}

}  // namespace

ModelConfig synthetic_config(const std::string& name, int layers) {
  if (name == "qwen3-coder-30b-a3b" || name == "qwen3-30b-a3b") return qwen3_coder_30b_a3b(layers);  // one shape
  ModelConfig c;
  c.model_type = "mixtral";
  if (name == "mixtral-8x7b") {
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.vocab_size = 32000;
    c.max_position_embeddings = 32768;
    c.num_hidden_layers = layers > 0 ? layers : 2;
  } else if (name == "tiny") {
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.vocab_size = 8192;
    c.max_position_embeddings = 4096;
    c.num_hidden_layers = layers > 0 ? layers : 4;
  } else {
    throw Error("bench: unknown synthetic model \"" + name + "\" (known: mixtral-8x7b, qwen3-coder-30b-a3b (also qwen3-30b-a3b), tiny)");
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.num_local_experts = 8;
  c.num_experts_per_tok = 2;
  c.rope_theta = 1e6;
  c.rms_norm_eps = 1e-5;
  return c;
}

TensorView& SyntheticStore::alloc(const std::string& name, DType dt, std::vector<int64_t> shape) {
  TensorView t;
  t.name = name;
  t.file = "synthetic";
  t.dtype = dt;
  t.shape = std::move(shape);
  t.nbytes = size_t(t.numel()) * dtype_size(dt);
  buffers.push_back(alloc_huge(t.nbytes, huge_pages));
  t.data = buffers.back().get();
  return tensors[name] = t;
}

void SyntheticStore::add_bf16(const std::string& name, std::vector<int64_t> shape, float scale) {
  TensorView& t = alloc(name, DType::BF16, std::move(shape));
  uint16_t* p = static_cast<uint16_t*>(const_cast<void*>(t.data));
  const int64_t n = t.numel();
  fill_blocks(threads, n, ++seed, [&](uint64_t& st, int64_t i) {
    const float u = (float(xorshift(st) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * scale;
    uint32_t bits;
    std::memcpy(&bits, &u, 4);
    p[i] = uint16_t(bits >> 16);  // truncation is fine for random weights
  });
}

void SyntheticStore::add_const_bf16(const std::string& name, std::vector<int64_t> shape, float value) {
  TensorView& t = alloc(name, DType::BF16, std::move(shape));
  uint16_t* p = static_cast<uint16_t*>(const_cast<void*>(t.data));
  std::fill(p, p + t.numel(), f32_to_bf16(value));
}

void SyntheticStore::add_words(const std::string& name, std::vector<int64_t> shape, bool random, uint32_t value) {
  TensorView& t = alloc(name, DType::I32, std::move(shape));
  uint32_t* p = static_cast<uint32_t*>(const_cast<void*>(t.data));
  const int64_t n = t.numel();
  fill_blocks(threads, n, ++seed, [&](uint64_t& st, int64_t i) { p[i] = random ? uint32_t(xorshift(st) >> 32) : value; });
}

void SyntheticStore::add_const_f16(const std::string& name, std::vector<int64_t> shape, float value) {
  TensorView& t = alloc(name, DType::F16, std::move(shape));
  uint16_t* p = static_cast<uint16_t*>(const_cast<void*>(t.data));
  std::fill(p, p + t.numel(), f32_to_f16(value));
}

void SyntheticStore::add_linear(const std::string& prefix, int64_t out, int64_t in, float scale, int awq_group) {
  if (awq_group <= 0) {
    add_bf16(prefix + ".weight", {out, in}, scale);
    return;
  }
  add_words(prefix + ".qweight", {in, out / 8}, true, 0);
  add_words(prefix + ".qzeros", {in / awq_group, out / 8}, false, 0x88888888u);
  add_const_f16(prefix + ".scales", {in / awq_group, out}, scale / 8.0f);
}

const TensorView* SyntheticStore::find(const std::string& name) const {
  auto found = tensors.find(name);
  return found == tensors.end() ? nullptr : &found->second;
}

std::shared_ptr<Model> make_synthetic_model(const std::string& name, int layers, const std::string& weights,
                                            const EngineOptions& eo, uint64_t seed) {
  ModelConfig c = synthetic_config(name, layers);
  int group = 0;
  if (weights == "awq" || weights == "awq-int4") {
    group = 128;
    c.quant.enabled = true;
    c.quant.quant_method = "awq";
    c.quant.bits = 4;
    c.quant.group_size = group;
    c.quant.zero_point = true;
    c.quant.version = "gemm";
  } else if (!weights.empty() && weights != "bf16") {
    throw Error("bench: unknown synthetic weight format \"" + weights + "\" (bf16 or awq)");
  }
  auto store = std::make_shared<SyntheticStore>();
  store->threads = hardware_threads(eo.threads);
  store->seed = seed;
  const int64_t h = c.hidden_size, it = c.intermediate_size, hd = c.head_dim, q_dim = c.num_attention_heads * hd;
  const float sh = 1.0f / std::sqrt(float(h)), si = 1.0f / std::sqrt(float(it)), sq = 1.0f / std::sqrt(float(q_dim));
  const WeightNames n = c.names();
  // Embeddings, norms, router and lm_head stay 16-bit in AWQ checkpoints too.
  store->add_bf16("model.embed_tokens.weight", {c.vocab_size, h}, 1.0f);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    store->add_const_bf16(p + "input_layernorm.weight", {h}, 1.0f);
    store->add_const_bf16(p + "post_attention_layernorm.weight", {h}, 1.0f);
    store->add_linear(p + "self_attn.q_proj", q_dim, h, sh, group);
    store->add_linear(p + "self_attn.k_proj", c.num_key_value_heads * hd, h, sh, group);
    store->add_linear(p + "self_attn.v_proj", c.num_key_value_heads * hd, h, sh, group);
    store->add_linear(p + "self_attn.o_proj", h, q_dim, sq, group);
    if (c.qk_norm) {
      store->add_const_bf16(p + "self_attn.q_norm.weight", {hd}, 1.0f);
      store->add_const_bf16(p + "self_attn.k_norm.weight", {hd}, 1.0f);
    }
    store->add_bf16(p + n.moe + ".gate.weight", {c.num_local_experts, h}, sh);
    for (int e = 0; e < c.num_local_experts; ++e) {
      const std::string ep = p + n.moe + ".experts." + std::to_string(e) + ".";
      store->add_linear(ep + n.w1, it, h, sh, group);
      store->add_linear(ep + n.w3, it, h, sh, group);
      store->add_linear(ep + n.w2, h, it, si, group);
    }
  }
  store->add_const_bf16("model.norm.weight", {h}, 1.0f);
  store->add_bf16("lm_head.weight", {c.vocab_size, h}, sh);
  TensorLookup lookup = [&](const std::string& n) { return store->find(n); };
  return make_model(c, lookup, store, eo, "synthetic:" + name, "synthetic " + name);
}

size_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, 6, "VmHWM:") == 0) {
      std::istringstream s(line.substr(6));
      size_t kb = 0;
      s >> kb;
      return kb * 1024;
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return size_t(ru.ru_maxrss) * 1024;
}

double measure_memcpy_gbps(size_t bytes, int threads, int repeats) {
  std::unique_ptr<char[]> src(new char[bytes]), dst(new char[bytes]);
  const int64_t chunks = hardware_threads(threads);
  parallel_chunks(int(chunks), chunks, [&](int64_t b, int64_t e) {  // fault the pages in first
    std::memset(src.get() + bytes * b / chunks, 1, bytes * e / chunks - bytes * b / chunks);
    std::memset(dst.get() + bytes * b / chunks, 0, bytes * e / chunks - bytes * b / chunks);
  });
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    parallel_chunks(int(chunks), chunks, [&](int64_t b, int64_t e) {
      const size_t lo = bytes * size_t(b) / size_t(chunks), hi = bytes * size_t(e) / size_t(chunks);
      std::memcpy(dst.get() + lo, src.get() + lo, hi - lo);
    });
    best = std::min(best, ms_since(t0));
  }
  return 2.0 * double(bytes) / (best * 1e-3) / 1e9;
}

double measure_device_copy_gbps(const std::string& device, size_t bytes, int threads) {
  const Device d = Device::parse(device);
  if (d.kind == DeviceKind::Cpu) return measure_memcpy_gbps(bytes, threads);
  return make_backend(Device{d.kind, d.index, 0})->measure_copy_gbps(bytes);  // the physical device
}

BenchResult run_bench(const BenchOptions& o) {
  BenchResult r;
  EngineOptions eo;
  eo.threads = o.threads;
  eo.device = o.device.empty() ? "cpu" : o.device;
  eo.devices = o.devices;
  eo.placement = o.placement;
  eo.split = o.split;
  const bool big = o.synthetic == "mixtral-8x7b" || o.synthetic == "qwen3-coder-30b-a3b" || o.synthetic == "qwen3-30b-a3b";
  r.prefill_tokens = o.prefill_tokens > 0 ? o.prefill_tokens : big ? 32 : 128;
  r.decode_tokens = o.decode_tokens > 0 ? o.decode_tokens : big ? 8 : 64;

  const auto t_load = Clock::now();
  std::shared_ptr<Model> model;
  if (!o.model_dir.empty()) {
    model = Model::load(o.model_dir, eo);
  } else if (!o.synthetic.empty()) {
    model = make_synthetic_model(o.synthetic, o.layers, o.weights, eo, o.seed);
  } else {
    throw Error("bench: give a model folder or a synthetic model name");
  }
  r.load_ms = ms_since(t_load);
  const ModelConfig& c = model->config();
  r.threads = model->threads();
  r.description = model->description();
  r.cpu_features = make_backend(Device{})->features();
  Context ctx(model, r.prefill_tokens + r.decode_tokens + 8);

  std::mt19937_64 rng(o.seed);
  std::vector<int32_t> prompt(size_t(r.prefill_tokens));
  for (auto& t : prompt) t = int32_t(rng() % uint64_t(c.vocab_size));

  EvalCapture cap;
  // Warm-up: fault the mapping in and let the pool spin up (not timed).
  ctx.eval(std::vector<int32_t>(prompt.begin(), prompt.begin() + std::min<size_t>(8, prompt.size())), cap);
  ctx.truncate(0);
  if (o.profile) {
    model->reset_profile();
    model->set_profiling(true);
  }

  auto t0 = Clock::now();
  ctx.eval(prompt, cap);
  const double prefill_ms = ms_since(t0);
  r.prefill_tokens_per_sec = r.prefill_tokens / (prefill_ms * 1e-3);
  std::string where = eo.device;
  for (size_t i = 0; i < eo.devices.size(); ++i) where = (i ? where + "," : "") + eo.devices[i];
  require_finite_logits(cap.logits, "the prefill", where);

  // Throughput: decode steps as an application runs them (recorded as a graph where the backend can).
  int32_t tok = int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin());
  t0 = Clock::now();
  for (int i = 0; i < r.decode_tokens; ++i) {
    ctx.eval({tok}, cap);
    tok = int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin());
  }
  const double decode_ms = ms_since(t0);
  require_finite_logits(cap.logits, "the decode steps", where);
  r.decode_step_mode = ctx.step_mode();
  if (o.profile) {
    model->set_profiling(false);
    r.profile = model->profile();
    r.profiled = true;
  }
  r.decode_tokens_per_sec = r.decode_tokens / (decode_ms * 1e-3);
  // Where the time goes: a few more steps timed layer by layer (a synchronisation after every layer, so these
  // are not part of the throughput above).
  cap.timing = true;
  const int timed = std::min(4, ctx.capacity() - ctx.n_past());
  std::vector<double> layer_sum(size_t(c.num_hidden_layers), 0.0);
  double head_sum = 0;
  for (int i = 0; i < timed; ++i) {
    ctx.eval({tok}, cap);
    for (int l = 0; l < c.num_hidden_layers; ++l) layer_sum[size_t(l)] += cap.layer_ms[size_t(l)];
    head_sum += cap.head_ms;
    tok = int32_t(std::max_element(cap.logits.begin(), cap.logits.end()) - cap.logits.begin());
  }
  double all_layers = 0;
  for (double& s : layer_sum) {
    s /= std::max(timed, 1);
    all_layers += s;
  }
  r.decode_layer_ms = layer_sum;
  r.decode_ms_per_layer = all_layers / c.num_hidden_layers;
  r.decode_head_ms = head_sum / std::max(timed, 1);
  r.weight_bytes_per_token = double(model->weights().decode_bytes_per_token(c.num_experts_per_tok));
  r.weight_gbps = r.weight_bytes_per_token * r.decode_tokens_per_sec / 1e9;
  r.peak_rss_bytes = double(peak_rss_bytes());  // before the memcpy probe's own 2 buffers
  for (const DeviceUsage& u : model->device_usage()) {
    r.device_peak_bytes = std::max(r.device_peak_bytes, double(u.peak_arena_bytes));
    r.device_weight_bytes = std::max(r.device_weight_bytes, double(u.planned_bytes));
  }
  r.memcpy_gbps = measure_memcpy_gbps(o.memcpy_bytes, r.threads);
  r.bandwidth_ratio = r.weight_gbps / r.memcpy_gbps;
  for (const DeviceUsage& u : model->device_usage()) {
    const Device d = Device::parse(u.device);
    if (d.kind == DeviceKind::Cpu) continue;
    const std::string physical = Device{d.kind, d.index, 0}.str();
    if (!r.device_copy_gbps.count(physical)) r.device_copy_gbps[physical] = measure_device_copy_gbps(physical, o.memcpy_bytes);
  }
  if (!r.device_copy_gbps.empty()) {  // the GPUs hold the weights: their copy rate is the ceiling of decode
    double slowest = 1e30;
    for (const auto& [name, gbps] : r.device_copy_gbps) slowest = std::min(slowest, gbps);
    r.bandwidth_ratio = r.weight_gbps / slowest;
  }
  return r;
}

std::string bench_result_json(const BenchResult& r) {
  std::ostringstream s;
  s.precision(6);
  s << "{\"prefillTokensPerSec\":" << r.prefill_tokens_per_sec << ",\"decodeTokensPerSec\":" << r.decode_tokens_per_sec
    << ",\"prefillTokens\":" << r.prefill_tokens << ",\"decodeTokens\":" << r.decode_tokens
    << ",\"decodeStepMode\":" << json_quote(r.decode_step_mode) << ",\"decodeMsPerLayer\":" << r.decode_ms_per_layer << ",\"decodeHeadMs\":" << r.decode_head_ms
    << ",\"deviceCopyGBps\":{";
  size_t di = 0;
  for (const auto& [name, gbps] : r.device_copy_gbps) s << (di++ ? "," : "") << json_quote(name) << ":" << gbps;
  s << "},\"decodeLayerMs\":[";
  for (size_t i = 0; i < r.decode_layer_ms.size(); ++i) s << (i ? "," : "") << r.decode_layer_ms[i];
  s << "],\"weightBytesPerToken\":" << std::fixed << std::setprecision(0) << r.weight_bytes_per_token;
  s.unsetf(std::ios::floatfield);
  s << std::setprecision(6) << ",\"weightGBps\":" << r.weight_gbps << ",\"memcpyGBps\":" << r.memcpy_gbps
    << ",\"bandwidthRatio\":" << r.bandwidth_ratio << ",\"peakRssBytes\":" << std::fixed << std::setprecision(0)
    << r.peak_rss_bytes << ",\"devicePeakBytes\":" << r.device_peak_bytes << ",\"devicePlannedBytes\":"
    << r.device_weight_bytes;
  s.unsetf(std::ios::floatfield);
  s << std::setprecision(6) << ",\"loadMs\":" << r.load_ms << ",\"threads\":" << r.threads
    << ",\"description\":" << json_quote(r.description) << ",\"cpuFeatures\":[";
  for (size_t i = 0; i < r.cpu_features.size(); ++i) s << (i ? "," : "") << json_quote(r.cpu_features[i]);
  s << "]";
  if (r.profiled) {
    std::map<std::string, double> ceilings;
    for (const DeviceProfile& d : r.profile.devices)
      if (d.kind == "cpu") ceilings[d.device] = r.memcpy_gbps;
    s << ",\"profile\":" << profile_json(r.profile, ceilings);
  }
  s << "}";
  return s.str();
}

}  // namespace mixq
