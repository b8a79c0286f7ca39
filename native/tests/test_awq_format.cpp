// The AutoAWQ GEMM format in and out:
//  - packing known values gives the exact int32 words of the format (nibble ORDER 0,2,4,6,1,3,5,7), unpacks back;
//  - quantize the bundled fixture (RTN and AWQ) → write → load with Model::load → every Linear's weights equal
//    the quantizer's own dequantized weights bit for bit; config/tensor layout as AutoAWQ writes it;
//  - an expert without calibration tokens: fallback + warning, the output still loads;
//  - cancellation leaves nothing on disk;
//  - bad input: clear errors naming the tensor/field (inconsistent shapes, group size, missing qzeros,
//    unsupported quant_method/version/bits).
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "awq/awq_pack.h"
#include "engine.h"
#include "json.h"
#include "linear_awq.h"
#include "model.h"
#include "quant/quantize.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void write_text(const std::string& p, const std::string& t) { std::ofstream(p, std::ios::binary) << t; }

const Linear* find_linear(const ModelWeights& w, const std::string& name) {
  for (const LayerWeights& l : w.layers) {
    for (const Linear* lin : {l.q.get(), l.k.get(), l.v.get(), l.o.get()})
      if (lin->name == name) return lin;
    for (const ExpertWeights& e : l.experts)
      for (const Linear* lin : {e.w1.get(), e.w2.get(), e.w3.get()})
        if (lin->name == name) return lin;
  }
  return nullptr;
}

// Quantizes the fixture; checks bit-exact round trip of every Linear. Returns the output folder.
std::string quantize_and_verify(const std::string& tmp, const std::string& tag, quant::QuantizeOptions o) {
  o.source_dir = tiny_model_dir();
  o.output_dir = tmp + "/" + tag;
  std::map<std::string, std::vector<float>> own;  // prefix → the quantizer's dequantized w_t [in, out]
  std::map<std::string, std::pair<int64_t, int64_t>> dims;
  o.on_linear = [&](const std::string& prefix, const quant::QuantizedLinear& ql) {
    std::vector<float> w_t(size_t(ql.in * ql.out));
    ql.dequantize(w_t.data());
    own[prefix] = std::move(w_t);
    dims[prefix] = {ql.in, ql.out};
  };
  const quant::QuantizeResult r = quant::quantize_model(o);
  check(r.layers == 4 && own.size() == size_t(4 * (4 + 8 * 3)),
        tag + ": quantized 4 layers × 28 Linears in " + fmt(r.seconds) + " s, peak RSS " +
            std::to_string(r.peak_rss_bytes >> 20) + " MiB");
  EngineOptions eo;
  eo.threads = 2;
  auto model = Model::load(o.output_dir, eo);
  size_t exact = 0;
  std::vector<float> row;
  for (const auto& [prefix, w_t] : own) {
    const Linear* lin = find_linear(model->weights(), prefix);
    if (!lin) continue;
    const auto [in, out] = dims[prefix];
    row.resize(size_t(in));
    bool same = lin->kind() == "awq-int4-g" + std::to_string(o.group_size);
    for (int64_t c = 0; c < out && same; ++c) {
      lin->weight_row(c, row.data());
      for (int64_t i = 0; i < in; ++i) same &= std::memcmp(&row[size_t(i)], &w_t[size_t(i * out + c)], 4) == 0;
    }
    exact += same;
  }
  check(exact == own.size(), tag + ": write → read → dequantize equals the quantizer's own weights bit for bit (" +
                                 std::to_string(exact) + "/" + std::to_string(own.size()) + " Linears)");
  return o.output_dir;
}

}  // namespace

int main() {
  // ---- packing: exact words ----
  {
    std::vector<uint8_t> q(16);
    for (int c = 0; c < 16; ++c) q[size_t(c)] = uint8_t(c);  // column c holds value c
    int32_t words[2];
    awq::pack_int4(q.data(), 1, 16, words);
    // word 0, slots 0..7 = columns 0,2,4,6,1,3,5,7 → nibbles (high→low) 7 5 3 1 6 4 2 0
    check(uint32_t(words[0]) == 0x75316420u, "pack: word 0 of values 0..7 is 0x75316420");
    check(uint32_t(words[1]) == 0xFDB9ECA8u, "pack: word 1 of values 8..15 is 0xFDB9ECA8");
    std::vector<uint8_t> one(8, 0);
    one[1] = 0xF;  // column 1 → slot 4 → bits 16..19
    int32_t w1;
    awq::pack_int4(one.data(), 1, 8, &w1);
    check(uint32_t(w1) == 0x000F0000u, "pack: column 1 lands in nibble slot 4 (bits 16..19)");
    std::vector<uint8_t> back(16);
    awq::unpack_int4(words, 1, 16, back.data());
    check(back == q, "unpack(pack(x)) == x for 0..15");
    bool at_ok = true;
    for (int c = 0; c < 16; ++c) at_ok &= awq::unpack_int4_at(words, c) == c;
    check(at_ok, "unpack_int4_at reads column c through the reverse order 0,4,1,5,2,6,3,7");
    std::mt19937 rng(3);
    std::vector<uint8_t> big(64 * 136), big_back(big.size());
    for (auto& v : big) v = uint8_t(rng() & 15);
    std::vector<int32_t> packed(64 * 17);
    awq::pack_int4(big.data(), 64, 136, packed.data());
    awq::unpack_int4(packed.data(), 64, 136, big_back.data());
    check(big == big_back, "pack/unpack round trip of a random [64, 136] matrix");
  }

  // ---- bad input at the factory: shapes, group size, missing qzeros, dtypes ----
  {
    std::vector<int32_t> qwd(256 * 32), qzd(2 * 32);
    std::vector<uint16_t> scd(2 * 256);
    QuantConfig qc;
    qc.enabled = true;
    qc.quant_method = "awq";
    qc.version = "gemm";
    qc.group_size = 128;
    auto tv = [](const std::string& n, DType t, std::vector<int64_t> shape, const void* d, size_t bytes) {
      TensorView v;
      v.name = n;
      v.file = "model.safetensors";
      v.dtype = t;
      v.shape = std::move(shape);
      v.data = d;
      v.nbytes = bytes;
      return v;
    };
    const std::string p = "model.layers.0.self_attn.q_proj";
    TensorView qw = tv(p + ".qweight", DType::I32, {256, 32}, qwd.data(), qwd.size() * 4);
    TensorView qz = tv(p + ".qzeros", DType::I32, {2, 32}, qzd.data(), qzd.size() * 4);
    TensorView sc = tv(p + ".scales", DType::F16, {2, 256}, scd.data(), scd.size() * 2);
    check(make_awq_linear(qw, qz, sc, qc) != nullptr, "a consistent qweight/qzeros/scales triple loads");
    TensorView sc_bad = tv(p + ".scales", DType::F16, {2, 248}, scd.data(), 2 * 248 * 2);
    check_throws([&] { make_awq_linear(qw, qz, sc_bad, qc); }, {p + ".scales", "[2, 248]", "inconsistent with qweight"},
                 "scales whose out disagrees with qweight");
    TensorView sc_groups = tv(p + ".scales", DType::F16, {4, 256}, scd.data(), 4 * 256 * 2);
    check_throws([&] { make_awq_linear(qw, qz, sc_groups, qc); }, {p + ".scales", "group size 128", "[2, 256]"},
                 "scales with the wrong number of groups for the group size");
    QuantConfig qc96 = qc;
    qc96.group_size = 96;
    check_throws([&] { make_awq_linear(qw, qz, sc, qc96); }, {p + ".qweight", "group size 96", "does not divide in_features 256"},
                 "a group size that does not divide in_features");
    check_throws([&] { make_awq_linear(qw, TensorView{}, sc, qc); }, {"missing qzeros", p},
                 "a missing qzeros");
    TensorView qz_bad = tv(p + ".qzeros", DType::I32, {2, 16}, qzd.data(), 2 * 16 * 4);
    check_throws([&] { make_awq_linear(qw, qz_bad, sc, qc); }, {p + ".qzeros", "[2, 16]"}, "qzeros inconsistent with qweight");
    TensorView qw_f = tv(p + ".qweight", DType::F32, {256, 32}, qwd.data(), qwd.size() * 4);
    check_throws([&] { make_awq_linear(qw_f, qz, sc, qc); }, {p + ".qweight", "int32"}, "a float qweight");
    QuantConfig gptq = qc;
    gptq.quant_method = "gptq";
    check_throws([&] { make_awq_linear(qw, qz, sc, gptq); }, {"quant_method", "gptq"}, "quant_method gptq");
    QuantConfig gemv = qc;
    gemv.version = "gemv";
    check_throws([&] { make_awq_linear(qw, qz, sc, gemv); }, {"version", "gemv"}, "version gemv");
    QuantConfig b8 = qc;
    b8.bits = 8;
    check_throws([&] { make_awq_linear(qw, qz, sc, b8); }, {"bits 8"}, "bits 8");
  }

  const std::string tmp = make_temp_dir("awq_format");

  // ---- RTN g128 and AWQ g64 (symmetric) on the fixture: bit-exact round trip, the format on disk ----
  quant::QuantizeOptions rtn;
  rtn.method = "rtn";
  rtn.group_size = 128;
  const std::string rtn_dir = quantize_and_verify(tmp, "rtn-g128", rtn);
  {
    const JsonValue cfg = parse_json_file(rtn_dir + "/config.json");
    const JsonValue* q = cfg.find("quantization_config");
    check(q && q->find("quant_method")->as_string() == "awq" && q->find("bits")->as_int() == 4 &&
              q->find("group_size")->as_int() == 128 && q->find("zero_point")->as_bool() &&
              q->find("version")->as_string() == "gemm" && q->find("modules_to_not_convert")->size() == 1 &&
              (*q->find("modules_to_not_convert"))[0].as_string() == "gate",
          "config.json gains quantization_config {awq, 4, 128, zero_point, gemm, modules_to_not_convert [gate]}");
    check(cfg.find("hidden_size")->as_int() == 256, "the rest of config.json is kept");
    auto store = WeightStore::open(rtn_dir);
    const TensorView& qw = store->get("model.layers.0.block_sparse_moe.experts.3.w2.qweight");
    const TensorView& sc = store->get("model.layers.0.block_sparse_moe.experts.3.w2.scales");
    const TensorView& qz = store->get("model.layers.0.block_sparse_moe.experts.3.w2.qzeros");
    check(qw.dtype == DType::I32 && qw.shape == std::vector<int64_t>{512, 32} && qz.shape == std::vector<int64_t>{4, 32} &&
              sc.dtype == DType::F16 && sc.shape == std::vector<int64_t>{4, 256},
          "w2 (out 256, in 512): qweight I32 [512, 32], qzeros [4, 32], scales F16 [4, 256]");
    check(store->get("model.layers.0.block_sparse_moe.gate.weight").dtype == DType::BF16 &&
              !store->find("model.layers.0.block_sparse_moe.gate.qweight") &&
              store->get("lm_head.weight").dtype == DType::BF16 && store->get("model.embed_tokens.weight").dtype == DType::BF16 &&
              store->get("model.layers.0.input_layernorm.weight").dtype == DType::BF16,
          "router, embeddings, lm_head and norms stay 16-bit");
    check(fs::exists(rtn_dir + "/tokenizer.json") && fs::exists(rtn_dir + "/tokenizer_config.json") &&
              fs::exists(rtn_dir + "/generation_config.json"),
          "tokenizer and generation files copied");
    size_t packed = 0, source = 0;
    for (const auto& e : fs::directory_iterator(rtn_dir))
      if (e.path().extension() == ".safetensors") packed += fs::file_size(e.path());
    for (const auto& e : fs::directory_iterator(tiny_model_dir()))
      if (e.path().extension() == ".safetensors") source += fs::file_size(e.path());
    EngineOptions eo;
    auto model = Model::load(rtn_dir, eo);
    check(model->weight_bytes() <= packed + (1 << 20),
          "resident weights " + std::to_string(model->weight_bytes()) + " B ≈ checkpoint " + std::to_string(packed) +
              " B (source bf16 " + std::to_string(source) + " B)");
    bool leftovers = false;
    for (const auto& e : fs::directory_iterator(tmp)) leftovers |= e.path().string().find(".tmp-") != std::string::npos;
    check(!leftovers, "no OUT.tmp-* folder is left after success");

    // Bad config / checkpoint through Model::load.
    auto variant = [&](const std::string& name, const std::string& from, const std::string& to) {
      const std::string dir = tmp + "/" + name;
      fs::copy(rtn_dir, dir, fs::copy_options::recursive);
      std::string text = read_text(dir + "/config.json");
      const size_t at = text.find(from);
      text.replace(at, from.size(), to);
      write_text(dir + "/config.json", text);
      return dir;
    };
    EngineOptions e1;
    check_throws([&] { Model::load(variant("gptq", "\"quant_method\": \"awq\"", "\"quant_method\": \"gptq\""), e1); },
                 {"quant_method", "gptq"}, "Model::load: quant_method gptq is rejected");
    check_throws([&] { Model::load(variant("gemv", "\"version\": \"gemm\"", "\"version\": \"gemv\""), e1); },
                 {"version", "gemv"}, "Model::load: version gemv is rejected");
    // (model.cpp validates method, version and bits before it checks the tensor shapes they imply.)
    check_throws([&] { Model::load(variant("bits8", "\"bits\": 4", "\"bits\": 8"), e1); },
                 {"bits 8", "not supported", "config.json"}, "Model::load: bits 8 is rejected as bits 8");
    check_throws([&] { Model::load(variant("g64", "\"group_size\": 128", "\"group_size\": 64"), e1); },
                 {"model.layers.0.self_attn.q_proj", "shape"}, "Model::load: group size disagreeing with the scales");
    // A checkpoint without one qzeros tensor.
    {
      const std::string dir = tmp + "/noqz";
      fs::copy(rtn_dir, dir, fs::copy_options::recursive);
      const std::string shard = dir + "/model-00002-of-00005.safetensors";
      SafetensorsFile f(rtn_dir + "/model-00002-of-00005.safetensors");
      std::vector<TensorView> keep;
      for (const TensorView& t : f.tensors())
        if (t.name != "model.layers.0.self_attn.k_proj.qzeros") keep.push_back(t);
      fs::remove(shard);
      write_safetensors(shard, keep, {{"format", "pt"}});
      std::string idx = read_text(dir + "/model.safetensors.index.json");
      const std::string line = "\"model.layers.0.self_attn.k_proj.qzeros\": \"model-00002-of-00005.safetensors\",";
      const size_t at = idx.find(line);
      if (at != std::string::npos) idx.erase(at, line.size());
      write_text(dir + "/model.safetensors.index.json", idx);
      check_throws([&] { Model::load(dir, e1); }, {"model.layers.0.self_attn.k_proj.qzeros"},
                   "Model::load: a missing qzeros is named");
    }
  }

  // AWQ (symmetric, g64) with a tiny calibration set: 1 sample × 3 tokens = 6 routing slots for 8 experts, so
  // at least 2 experts per layer get no tokens → fallback + warning, and the output still loads bit-exactly.
  {
    quant::QuantizeOptions awq;
    awq.method = "awq";
    awq.group_size = 64;
    awq.zero_point = false;
    awq.samples = 1;
    awq.seq_len = 3;
    awq.calib_ids = {1, 500, 600};
    std::vector<std::string> warnings;
    const std::string dir = quantize_and_verify(tmp, "awq-sym-g64-starved", awq);
    awq.output_dir = tmp + "/again";
    awq.source_dir = tiny_model_dir();
    const quant::QuantizeResult r = quant::quantize_model(awq);
    size_t starved = 0;
    for (const auto& w : r.warnings) starved += w.find("received no calibration tokens") != std::string::npos;
    check(starved >= 2 * 4, "experts without calibration tokens are reported (" + std::to_string(starved) +
                                " warnings), e.g. " + (r.warnings.empty() ? "" : r.warnings[0]));
    const JsonValue cfg = parse_json_file(dir + "/config.json");
    check(!cfg.find("quantization_config")->find("zero_point")->as_bool(), "symmetric run writes zero_point false");
    auto store = WeightStore::open(dir);
    const TensorView& qz = store->get("model.layers.1.self_attn.v_proj.qzeros");
    bool all8 = true;
    for (int64_t i = 0; i < qz.numel(); ++i) all8 &= uint32_t(static_cast<const int32_t*>(qz.data)[i]) == 0x88888888u;
    check(all8, "symmetric: every packed zero is 8 (0x88888888), so GEMM readers need no special case");
  }

  // ---- cancellation: nothing is left behind ----
  {
    quant::QuantizeOptions o;
    o.method = "rtn";
    o.source_dir = tiny_model_dir();
    o.output_dir = tmp + "/cancelled";
    std::atomic<bool> cancel{false};
    o.cancel = &cancel;
    int calls = 0;
    o.on_progress = [&](const quant::QuantizeProgress& p) {
      if (p.layer == 1) cancel = true;
      ++calls;
    };
    bool cancelled = false;
    try {
      quant::quantize_model(o);
    } catch (const Cancelled&) {
      cancelled = true;
    }
    bool leftovers = false;
    for (const auto& e : fs::directory_iterator(tmp)) leftovers |= e.path().string().find("cancelled") != std::string::npos;
    check(cancelled && calls > 0 && !leftovers, "a cancelled run throws Cancelled and leaves neither OUT nor OUT.tmp-*");
    check_throws([&] { o.cancel = nullptr; o.output_dir = rtn_dir; quant::quantize_model(o); }, {"already exists"},
                 "an existing non-empty output folder is refused");
  }
  remove_tree(tmp);
  return finish();
}
