// quantize_model: the driver around quantize_layer — source folder in, AutoAWQ GEMM folder out (see quantize.h).
#include "quant/quantize.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "awq/awq_pack.h"
#include "error.h"
#include "file.h"
#include "json.h"
#include "model.h"
#include "safetensors.h"
#include "tensor.h"
#include "thread_pool.h"

namespace fs = std::filesystem;

namespace mixq::quant {
namespace {

using Clock = std::chrono::steady_clock;

size_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return size_t(ru.ru_maxrss) * 1024;  // Linux: KiB
}

float to_f32(const TensorView& t, size_t i) {
  switch (t.dtype) {
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
    case DType::F32: return static_cast<const float*>(t.data)[i];
    default: throw Error(t.file + ": tensor " + t.name + " has dtype " + dtype_name(t.dtype) + "; expected a float");
  }
}

const TensorView& expect(const WeightStore& store, const std::string& name, const std::vector<int64_t>& shape) {
  const TensorView& t = store.get(name);
  TensorView want;
  want.shape = shape;
  if (t.shape != shape) {
    throw Error(t.file + ": tensor " + name + " has shape " + t.shape_str() + " but config.json implies " +
                want.shape_str());
  }
  return t;
}

// W [out, in] (16/32-bit, mapped) → w_t [in, out] f32, in 64×64 blocks.
std::vector<float> load_transposed(const WeightStore& store, const std::string& name, int64_t out, int64_t in,
                                   ThreadPool& pool) {
  const TensorView& t = expect(store, name, {out, in});
  std::vector<float> w_t(static_cast<size_t>(in * out));
  const int64_t B = 64, oblocks = (out + B - 1) / B;
  pool.parallel_for(oblocks, [&](int64_t b, int64_t e) {
    for (int64_t ob = b; ob < e; ++ob)
      for (int64_t i0 = 0; i0 < in; i0 += B)
        for (int64_t o = ob * B; o < std::min(out, ob * B + B); ++o)
          for (int64_t i = i0; i < std::min(in, i0 + B); ++i) w_t[size_t(i * out + o)] = to_f32(t, static_cast<size_t>(o * in + i));
  });
  return w_t;
}

std::vector<float> load_vector(const WeightStore& store, const std::string& name, int64_t n) {
  const TensorView& t = expect(store, name, {n});
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = to_f32(t, static_cast<size_t>(i));
  return v;
}

// Owned bytes + the view write_safetensors takes.
struct OutTensor {
  TensorView view;
  std::vector<uint8_t> bytes;  // empty when the view points into the source mapping
};

OutTensor owned(const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  OutTensor t;
  t.bytes = std::move(bytes);
  t.view.name = name;
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  t.view.data = t.bytes.data();
  t.view.nbytes = t.bytes.size();
  return t;
}

template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// A norm vector stored back in its source dtype.
std::vector<uint8_t> encode_vector(const std::vector<float>& v, DType dtype) {
  if (dtype == DType::F32) return as_bytes(v);
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = dtype == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  return as_bytes(h);
}

std::function<float(float)> rounder(DType dtype) {
  if (dtype == DType::BF16) return [](float x) { return bf16_to_f32(f32_to_bf16(x)); };
  if (dtype == DType::F16) return [](float x) { return f16_to_f32(f32_to_f16(x)); };
  return [](float x) { return x; };
}

// qweight / qzeros / scales of one Linear in the AutoAWQ GEMM layout.
void append_awq(std::vector<OutTensor>& dst, const std::string& prefix, const QuantizedLinear& ql) {
  const int64_t groups = ql.in / ql.group;
  std::vector<int32_t> qweight(static_cast<size_t>(ql.in * ql.out / 8)), qzeros(static_cast<size_t>(groups * ql.out / 8));
  awq::pack_int4(ql.q.data(), ql.in, ql.out, qweight.data());
  awq::pack_int4(ql.zeros.data(), groups, ql.out, qzeros.data());
  dst.push_back(owned(prefix + ".qweight", DType::I32, {ql.in, ql.out / 8}, as_bytes(qweight)));
  dst.push_back(owned(prefix + ".qzeros", DType::I32, {groups, ql.out / 8}, as_bytes(qzeros)));
  dst.push_back(owned(prefix + ".scales", DType::F16, {groups, ql.out}, as_bytes(ql.scales)));
}

// Shortest-enough JSON text of the config with quantization_config appended before the closing brace
// (the rest of the file is kept byte for byte).
std::string config_with_quantization(const std::string& text, const std::string& source, int group, bool zero_point) {
  const JsonValue root = parse_json(text, source);
  if (!root.is_object()) throw Error(source + ": expected a JSON object");
  if (root.find("quantization_config")) throw Error(source + ": the source model is already quantized");
  const size_t close = text.rfind('}');
  std::ostringstream q;
  q << ",\n  \"quantization_config\": {\n    \"quant_method\": \"awq\",\n    \"bits\": 4,\n    \"group_size\": "
    << group << ",\n    \"zero_point\": " << (zero_point ? "true" : "false")
    << ",\n    \"version\": \"gemm\",\n    \"modules_to_not_convert\": [\"gate\"]\n  }\n";
  std::string body = text.substr(0, close);
  while (!body.empty() && (body.back() == '\n' || body.back() == ' ' || body.back() == '\r')) body.pop_back();
  return body + q.str() + "}\n";
}

std::string read_file(const std::string& path) {
  return read_regular_file(path, kMaxTokenizerFileBytes, "a file of a model folder");
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f) throw Error("cannot write " + path);
}

std::string shard_name(int i, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i, n);
  return buf;
}

// OUT.tmp-XXXXXX/.mixq-owner: "PID HOST" of the run writing it. A run killed outright (SIGKILL, power loss) cannot
// remove its folder; the next run for the same OUT does, when that process is gone.
constexpr const char* kOwnerFile = ".mixq-owner";

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

void write_owner_file(const std::string& dir) {
  write_file((fs::path(dir) / kOwnerFile).string(), std::to_string(::getpid()) + " " + host_name() + "\n");
}

// Removes OUT.tmp-XXXXXX folders of runs that are dead: their owner file names a process of this host that no longer
// exists. Folders without an owner file, of another host or of a live process are left alone. Returns the paths removed.
std::vector<std::string> remove_stale_temp_dirs(const fs::path& out_path) {
  std::vector<std::string> removed;
  const fs::path parent = out_path.parent_path().empty() ? fs::path(".") : out_path.parent_path();
  const std::string prefix = out_path.filename().string() + ".tmp-";
  std::error_code ec;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() != prefix.size() + 6 || name.compare(0, prefix.size(), prefix) != 0) continue;
    if (!it->is_directory(ec) || it->is_symlink(ec)) continue;
    std::ifstream f(it->path() / kOwnerFile);
    long pid = 0;
    std::string host;
    if (!(f >> pid >> host) || pid <= 0 || host != host_name()) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to probe): leave it
    std::error_code rm;
    fs::remove_all(it->path(), rm);
    if (!rm) removed.push_back(it->path().string());
  }
  return removed;
}

// Removes the temporary folder unless released (success renames it away first).
struct TempDir {
  std::string path;
  ~TempDir() {
    if (!path.empty()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

}  // namespace

QuantizeResult quantize_model(const QuantizeOptions& opts) {
  const auto t0 = Clock::now();
  QuantizeResult result;
  const bool awq_method = opts.method == "awq";
  if (!awq_method && opts.method != "rtn") throw Error("unknown method \"" + opts.method + "\" (awq or rtn)");
  if (opts.group_size != 32 && opts.group_size != 64 && opts.group_size != 128) {
    throw Error("group size " + std::to_string(opts.group_size) + " is not supported (32, 64 or 128)");
  }
  if (awq_method) {
    if (opts.samples <= 0 || opts.seq_len < 2) throw Error("AWQ needs calibration samples (samples ≥ 1, seq_len ≥ 2)");
    if (opts.calib_ids.size() != size_t(opts.samples) * size_t(opts.seq_len)) {
      throw Error("calibration ids: expected samples × seq_len = " +
                  std::to_string(int64_t(opts.samples) * opts.seq_len) + " ids, got " +
                  std::to_string(opts.calib_ids.size()));
    }
  }
  const ModelConfig cfg = load_model_config(opts.source_dir);
  if (cfg.quant.enabled) throw Error(opts.source_dir + "/config.json: the source model is already quantized");
  for (int64_t f : {int64_t(cfg.hidden_size), int64_t(cfg.intermediate_size),
                    int64_t(cfg.num_attention_heads) * cfg.head_dim}) {
    if (f % opts.group_size != 0) {
      throw Error("group size " + std::to_string(opts.group_size) + " does not divide in_features " + std::to_string(f) +
                  " of " + opts.source_dir);
    }
  }
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    if (!cfg.moe_layer(l)) {
      throw Error(opts.source_dir + "/config.json: layer " + std::to_string(l) +
                  " is a dense MLP (mlp_only_layers / decoder_sparse_step); quantizing dense-MLP layers is not supported");
    }
  const std::unique_ptr<WeightStore> store = WeightStore::open(opts.source_dir);
  check_checkpoint_matches_config(cfg, store->names(), opts.source_dir + "/config.json", store->source());

  // Output: OUT.tmp-XXXXXX next to OUT, renamed at the end.
  const fs::path out_path = fs::absolute(opts.output_dir).lexically_normal();
  if (fs::exists(out_path) && !(fs::is_directory(out_path) && fs::is_empty(out_path))) {
    throw Error("output folder " + out_path.string() + " already exists and is not empty");
  }
  if (!out_path.parent_path().empty()) fs::create_directories(out_path.parent_path());
  for (const std::string& dir : remove_stale_temp_dirs(out_path)) {
    result.warnings.push_back("removed " + dir + ", the temporary folder of a quantization whose process is gone");
  }
  std::string tmpl = out_path.string() + ".tmp-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw Error("cannot create a temporary folder next to " + out_path.string());
  TempDir tmp{tmpl};
  write_owner_file(tmp.path);

  ThreadPool pool(opts.threads);
  const int L = cfg.num_hidden_layers, E = cfg.num_local_experts;
  const int64_t d = cfg.hidden_size, inter = cfg.intermediate_size;
  const int64_t qd = int64_t(cfg.num_attention_heads) * cfg.head_dim;
  const int64_t kvd = int64_t(cfg.num_key_value_heads) * cfg.head_dim;
  const int64_t N = awq_method ? int64_t(opts.samples) * opts.seq_len : 0;
  result.layers = L;
  result.calib_tokens = N;

  auto report = [&](int layer, const std::string& phase, double layer_frac) {
    if (opts.cancel && opts.cancel->load()) throw Cancelled();
    if (!opts.on_progress) return;
    QuantizeProgress p;
    p.layer = layer;
    p.layers = L;
    p.phase = phase;
    p.fraction = std::min(1.0, (double(layer) + layer_frac) / double(L));
    p.elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
    p.eta_s = (layer > 0 && p.fraction > 0) ? p.elapsed_s / p.fraction * (1.0 - p.fraction) : -1.0;
    opts.on_progress(p);
  };

  // Layer inputs: the embeddings of the calibration tokens [N, d].
  std::vector<float> h;
  if (awq_method) {
    const TensorView& emb = expect(*store, "model.embed_tokens.weight", {cfg.vocab_size, d});
    h.resize(static_cast<size_t>(N * d));
    for (int64_t t = 0; t < N; ++t) {
      const int32_t id = opts.calib_ids[size_t(t)];
      if (id < 0 || id >= cfg.vocab_size) {
        throw Error("calibration token id " + std::to_string(id) + " is out of range (vocab " +
                    std::to_string(cfg.vocab_size) + ")");
      }
      for (int64_t i = 0; i < d; ++i) h[size_t(t * d + i)] = to_f32(emb, static_cast<size_t>(id) * size_t(d) + size_t(i));
    }
  }

  const int shards = L + 1;
  std::map<std::string, std::string> weight_map;
  size_t total_size = 0;
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"quantized_by", "mixq"}};
  auto write_shard = [&](int index, const std::vector<OutTensor>& tensors) {
    const std::string name = shard_name(index, shards);
    std::vector<TensorView> views;
    for (const OutTensor& t : tensors) {
      views.push_back(t.view);
      weight_map[t.view.name] = name;
      total_size += t.view.nbytes;
    }
    write_safetensors((fs::path(tmp.path) / name).string(), views, meta);
  };

  // Shard 1: what stays 16-bit outside the layers (embeddings, final norm, lm_head), copied as stored.
  {
    std::vector<OutTensor> ts;
    for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}) {
      const TensorView* t = store->find(name);
      if (!t) {
        if (std::string(name) == "lm_head.weight" && cfg.tie_word_embeddings) continue;
        throw Error("tensor " + std::string(name) + " not found in " + opts.source_dir);
      }
      OutTensor o;
      o.view = *t;
      ts.push_back(std::move(o));
    }
    write_shard(1, ts);
  }

  LayerQuantOptions lopts;
  lopts.awq = awq_method;
  lopts.spec.group = opts.group_size;
  lopts.spec.zero_point = opts.zero_point;
  lopts.clip_tokens = opts.clip_tokens;
  lopts.rounding = opts.rounding;
  lopts.propagate_quantized = opts.propagate_quantized;
  lopts.cancel = opts.cancel;
  const WeightNames names = cfg.names();
  for (int l = 0; l < L; ++l) {
    const auto tl = Clock::now();
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string router = p + names.moe + ".gate.weight";
    report(l, "load", 0.0);
    LayerF32 w;
    w.attn_norm = load_vector(*store, p + "input_layernorm.weight", d);
    w.post_norm = load_vector(*store, p + "post_attention_layernorm.weight", d);
    const DType attn_norm_dtype = store->get(p + "input_layernorm.weight").dtype;
    const DType post_norm_dtype = store->get(p + "post_attention_layernorm.weight").dtype;
    w.q_t = load_transposed(*store, p + "self_attn.q_proj.weight", qd, d, pool);
    w.k_t = load_transposed(*store, p + "self_attn.k_proj.weight", kvd, d, pool);
    w.v_t = load_transposed(*store, p + "self_attn.v_proj.weight", kvd, d, pool);
    w.o_t = load_transposed(*store, p + "self_attn.o_proj.weight", d, qd, pool);
    if (cfg.qk_norm) {
      w.q_norm = load_vector(*store, p + "self_attn.q_norm.weight", cfg.head_dim);
      w.k_norm = load_vector(*store, p + "self_attn.k_norm.weight", cfg.head_dim);
    }
    w.gate_t = load_transposed(*store, router, E, d, pool);
    w.experts.resize(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) {
      const std::string ep = p + names.moe + ".experts." + std::to_string(e) + ".";
      w.experts[size_t(e)].w1_t = load_transposed(*store, ep + names.w1 + ".weight", inter, d, pool);
      w.experts[size_t(e)].w3_t = load_transposed(*store, ep + names.w3 + ".weight", inter, d, pool);
      w.experts[size_t(e)].w2_t = load_transposed(*store, ep + names.w2 + ".weight", d, inter, pool);
    }
    if (attn_norm_dtype != post_norm_dtype) {
      throw Error(opts.source_dir + ": layer " + std::to_string(l) + " norms are stored in different dtypes");
    }
    lopts.round_norm = rounder(attn_norm_dtype);
    lopts.on_phase = [&](const std::string& phase, double frac) { report(l, phase, frac); };
    LayerQuantized lq;
    quantize_layer(cfg, w, awq_method ? h.data() : nullptr, awq_method ? opts.samples : 0,
                   awq_method ? opts.seq_len : 0, lopts, &lq, pool);
    for (auto& warning : lq.warnings) result.warnings.push_back("layer " + std::to_string(l) + ": " + warning);
    result.experts_without_tokens += lq.experts_without_tokens;
    for (float a : lq.best_alpha) result.best_alpha.push_back(a);

    report(l, "write", 0.95);
    std::vector<OutTensor> ts;
    ts.push_back(owned(p + "input_layernorm.weight", attn_norm_dtype, {d}, encode_vector(lq.attn_norm, attn_norm_dtype)));
    ts.push_back(owned(p + "post_attention_layernorm.weight", post_norm_dtype, {d},
                       encode_vector(lq.post_norm, post_norm_dtype)));
    {
      // The router stays in its source dtype; AWQ scaled its input channels (RTN leaves it as it was).
      const TensorView& src_gate = store->get(router);
      std::vector<float> gate(size_t(E * d));
      for (int64_t e = 0; e < E; ++e)
        for (int64_t i = 0; i < d; ++i) gate[size_t(e * d + i)] = lq.gate_t[size_t(i * E + e)];
      ts.push_back(owned(router, src_gate.dtype, {int64_t(E), d},
                         encode_vector(gate, src_gate.dtype)));
    }
    for (const char* qk : {"self_attn.q_norm.weight", "self_attn.k_norm.weight"}) {  // copied as stored
      if (!cfg.qk_norm) break;
      OutTensor o;
      o.view = store->get(p + qk);
      ts.push_back(std::move(o));
    }
    for (const auto& [name, ql] : lq.linears) {
      if (opts.on_linear) opts.on_linear(p + name, ql);
      append_awq(ts, p + name, ql);
    }
    write_shard(l + 2, ts);
    result.layer_seconds.push_back(std::chrono::duration<double>(Clock::now() - tl).count());
  }

  // Index, config, tokenizer and generation files.
  {
    std::ostringstream idx;
    idx << "{\n  \"metadata\": {\"total_size\": " << total_size << "},\n  \"weight_map\": {\n";
    size_t k = 0;
    for (const auto& [name, file] : weight_map) {
      idx << "    " << json_quote(name) << ": " << json_quote(file) << (++k < weight_map.size() ? ",\n" : "\n");
    }
    idx << "  }\n}\n";
    write_file((fs::path(tmp.path) / "model.safetensors.index.json").string(), idx.str());
  }
  const std::string cfg_path = (fs::path(opts.source_dir) / "config.json").string();
  write_file((fs::path(tmp.path) / "config.json").string(),
             config_with_quantization(read_file(cfg_path), cfg_path, opts.group_size, opts.zero_point));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json",
                        "tokenizer.model", "added_tokens.json"}) {
    const fs::path src = fs::path(opts.source_dir) / f;
    if (fs::exists(src)) fs::copy_file(src, fs::path(tmp.path) / f);
  }
  if (opts.cancel && opts.cancel->load()) throw Cancelled();
  fs::remove(fs::path(tmp.path) / kOwnerFile);
  if (fs::exists(out_path)) fs::remove(out_path);  // an empty folder (checked above)
  fs::rename(tmp.path, out_path);
  tmp.path.clear();

  for (const auto& entry : fs::directory_iterator(out_path))
    if (entry.is_regular_file()) result.output_bytes += size_t(entry.file_size());
  result.output_dir = out_path.string();
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  result.peak_rss_bytes = peak_rss_bytes();
  if (opts.on_progress) {
    QuantizeProgress p;
    p.layer = L;
    p.layers = L;
    p.phase = "done";
    p.fraction = 1.0;
    p.elapsed_s = result.seconds;
    p.eta_s = 0;
    opts.on_progress(p);
  }
  return result;
}

}  // namespace mixq::quant
