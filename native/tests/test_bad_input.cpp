// Broken checkpoints give a clear mixq::Error naming the file / tensor / field, never a crash.
// Each case copies the bundled fixture model into a temp dir (unchanged files as symlinks) and
// breaks one thing by rewriting real bytes: safetensors headers, config.json, the shard index.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "engine.h"
#include "json.h"
#include "safetensors.h"
#include "test_util.h"

using namespace mixq;
using namespace mixq_test;
namespace fs = std::filesystem;

namespace {

const char* kShard1 = "model-00001-of-00003.safetensors";
const char* kShard2 = "model-00002-of-00003.safetensors";
const char* kShard3 = "model-00003-of-00003.safetensors";


// A copy of the fixture model: every file a symlink except those the case rewrites (copied).
struct BrokenModel {
  std::string dir;
  explicit BrokenModel(const std::string& tag) : dir(make_temp_dir(tag)) {
    for (const auto& e : fs::directory_iterator(tiny_model_dir()))
      fs::create_symlink(e.path(), fs::path(dir) / e.path().filename());
  }
  ~BrokenModel() { remove_tree(dir); }
  std::string path(const std::string& f) const { return dir + "/" + f; }
  // Replaces the symlink by a private copy and returns its bytes.
  std::string own(const std::string& f) const {
    const std::string bytes = read_file(path(f));
    fs::remove(path(f));
    write_file(path(f), bytes);
    return bytes;
  }
  // Edits the JSON header text of a safetensors file (data region unchanged), re-padding to 8 bytes.
  void edit_header(const std::string& f, const std::function<void(std::string&)>& edit) const {
    const std::string bytes = own(f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | (unsigned char)bytes[size_t(i)];
    std::string header = bytes.substr(8, size_t(n));
    const std::string data = bytes.substr(8 + size_t(n));
    while (!header.empty() && header.back() == ' ') header.pop_back();
    edit(header);
    while ((8 + header.size()) % 8) header += ' ';
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
    write_file(path(f), out + header + data);
  }
  void edit_text(const std::string& f, const std::string& from, const std::string& to) const {
    std::string s = own(f);
    const size_t at = s.find(from);
    if (at == std::string::npos) {
      std::printf("test setup: \"%s\" not found in %s\n", from.c_str(), f.c_str());
      std::exit(1);
    }
    s.replace(at, from.size(), to);
    write_file(path(f), s);
  }
};

void replace_once(std::string& s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  if (at == std::string::npos) {
    std::printf("test setup: \"%s\" not found\n", from.c_str());
    std::exit(1);
  }
  s.replace(at, from.size(), to);
}

void load(const std::string& dir) { Model::load(dir, EngineOptions{}); }

}  // namespace

int main() {
  // The untouched copy loads (the harness itself is sound).
  {
    BrokenModel m("ok");
    bool ok = true;
    try { load(m.dir); } catch (const std::exception& e) { ok = false; std::printf("%s\n", e.what()); }
    check(ok, "an unmodified copy of the fixture loads");
  }
  {  // 1. truncated shard: cut shard 3 to half its size
    BrokenModel m("truncated");
    const std::string bytes = m.own(kShard3);
    write_file(m.path(kShard3), bytes.substr(0, bytes.size() / 2));
    check_throws([&] { load(m.dir); }, {kShard3, "truncated", "tensor model.layers.3"}, "truncated shard");
  }
  {  // 1b. truncated inside the header
    BrokenModel m("truncated-header");
    write_file(m.path(kShard2), m.own(kShard2).substr(0, 100));
    check_throws([&] { load(m.dir); }, {kShard2, "header length", "exceeds the file size"},
                 "shard truncated inside its header");
  }
  {  // 2. header offsets beyond the end of the file
    BrokenModel m("offsets");
    m.edit_header(kShard3, [](std::string& h) {
      replace_once(h, "\"data_offsets\":[0,262144]", "\"data_offsets\":[9000000,9262144]");
    });
    check_throws([&] { load(m.dir); }, {kShard3, "model.layers.3.block_sparse_moe.experts.1.w1.weight", "beyond the end"},
                 "header offsets beyond the file");
  }
  {  // 2b. overlapping tensors
    BrokenModel m("overlap");
    m.edit_header(kShard3, [](std::string& h) {
      replace_once(h, "\"data_offsets\":[262144,524288]", "\"data_offsets\":[0,262144]");
    });
    check_throws([&] { load(m.dir); }, {kShard3, "overlaps"}, "overlapping data_offsets");
  }
  {  // 2c. offsets that disagree with dtype × shape
    BrokenModel m("span");
    m.edit_header(kShard3, [](std::string& h) {
      replace_once(h, "\"shape\":[512,256],\"data_offsets\":[0,262144]", "\"shape\":[512,255],\"data_offsets\":[0,262144]");
    });
    check_throws([&] { load(m.dir); }, {kShard3, "experts.1.w1.weight", "262144 bytes", "needs 261120"},
                 "data_offsets span disagreeing with dtype*shape");
  }
  {  // 3. unknown dtype
    BrokenModel m("dtype");
    m.edit_header(kShard3, [](std::string& h) { replace_once(h, "\"dtype\":\"BF16\"", "\"dtype\":\"BF17\""); });
    check_throws([&] { load(m.dir); }, {kShard3, "experts.1.w1.weight", "unknown dtype \"BF17\""}, "unknown dtype");
  }
  {  // 4. a tensor whose shape disagrees with config.json (same byte count, so the file itself is valid)
    BrokenModel m("shape");
    m.edit_header(kShard3, [](std::string& h) {
      replace_once(h, "\"shape\":[512,256],\"data_offsets\":[0,262144]", "\"shape\":[256,512],\"data_offsets\":[0,262144]");
    });
    check_throws([&] { load(m.dir); },
                 {kShard3, "model.layers.3.block_sparse_moe.experts.1.w1.weight", "[256, 512]", "[512, 256]", "config.json"},
                 "tensor shape disagreeing with config.json");
  }
  {  // 5. a missing config field
    BrokenModel m("field");
    m.edit_text("config.json", "\"num_local_experts\": 8,", "");
    check_throws([&] { load(m.dir); }, {"config.json", "num_local_experts", "missing"}, "missing config field");
  }
  {  // 5b. a config field of the wrong type
    BrokenModel m("field-type");
    m.edit_text("config.json", "\"hidden_size\": 256", "\"hidden_size\": \"256\"");
    check_throws([&] { load(m.dir); }, {"config.json", "hidden_size", "integer"}, "config field of the wrong type");
  }
  {  // 5c. malformed JSON in config.json: the byte offset is named
    BrokenModel m("json");
    m.edit_text("config.json", "\"hidden_size\": 256,", "\"hidden_size\": 256,,");
    check_throws([&] { load(m.dir); }, {"config.json", "invalid JSON at byte"}, "malformed config.json");
  }
  {  // 6. a shard named in the index but absent
    BrokenModel m("shard");
    fs::remove(m.path(kShard2));
    check_throws([&] { load(m.dir); }, {kShard2, "model.safetensors.index.json", "does not exist"},
                 "shard named in the index but absent");
  }
  {  // 6b. the index places a tensor in a shard that does not hold it
    BrokenModel m("index");
    m.edit_text("model.safetensors.index.json", "\"model.norm.weight\": \"" + std::string(kShard3) + "\"",
                "\"model.norm.weight\": \"" + std::string(kShard1) + "\"");
    check_throws([&] { load(m.dir); }, {"model.norm.weight", "is not in this shard"}, "index pointing at the wrong shard");
  }
  {  // 6c. a tensor missing altogether
    BrokenModel m("missing-tensor");
    m.edit_header(kShard3, [](std::string& h) {
      replace_once(h, "\"model.layers.3.block_sparse_moe.experts.1.w1.weight\"", "\"model.layers.3.block_sparse_moe.experts.1.w1.weight_renamed\"");
    });
    m.edit_text("model.safetensors.index.json", "\"model.layers.3.block_sparse_moe.experts.1.w1.weight\"",
                "\"model.layers.3.block_sparse_moe.experts.1.w1.weight_renamed\"");
    check_throws([&] { load(m.dir); }, {"model.layers.3.block_sparse_moe.experts.1.w1.weight", "not found"},
                 "a required tensor absent from the checkpoint");
  }
  {  // 7. model_type other than mixtral
    BrokenModel m("type");
    m.edit_text("config.json", "\"model_type\": \"mixtral\"", "\"model_type\": \"llama\"");
    check_throws([&] { load(m.dir); }, {"config.json", "model_type", "llama", "mixtral"}, "model_type other than mixtral");
  }
  {  // fuzz: random byte edits in a small safetensors file's header and every truncation length either
     // load or raise mixq::Error — never a crash or another exception type
    const std::string dir = make_temp_dir("fuzz");
    std::vector<float> a(12, 1.5f);
    std::vector<uint16_t> b(30, 0x3f80);
    TensorView ta, tb;
    ta.name = "a";
    ta.dtype = DType::F32;
    ta.shape = {3, 4};
    ta.data = a.data();
    ta.nbytes = 48;
    tb.name = "b.weight";
    tb.dtype = DType::BF16;
    tb.shape = {5, 6};
    tb.data = b.data();
    tb.nbytes = 60;
    const std::string good = dir + "/good.safetensors";
    write_safetensors(good, {ta, tb}, {{"format", "pt"}});
    const std::string bytes = read_file(good);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | (unsigned char)bytes[size_t(i)];
    std::mt19937 gen(7);
    int loaded = 0, errors = 0, other = 0;
    const std::string path = dir + "/fuzz.safetensors";
    auto attempt = [&](const std::string& content) {
      write_file(path, content);
      try {
        SafetensorsFile f(path);
        // A loaded file's views lie inside the mapping and agree with dtype × shape: read every byte.
        unsigned sum = 0;
        for (const TensorView& t : f.tensors()) {
          if (t.nbytes != size_t(t.numel()) * dtype_size(t.dtype)) ++other;
          for (size_t i = 0; i < t.nbytes; ++i) sum += static_cast<const unsigned char*>(t.data)[i];
        }
        if (sum == 0xffffffffu) std::printf("(checksum)\n");  // keeps the reads
        ++loaded;
      } catch (const Error&) {
        ++errors;
      } catch (...) {
        ++other;
      }
    };
    for (int trial = 0; trial < 400; ++trial) {
      std::string c = bytes;
      const int edits = 1 + int(gen() % 3);
      for (int e = 0; e < edits; ++e) {
        const size_t at = gen() % (8 + header_len);
        const char pool[] = "{}[]\",:0123456789-eE.aAtfnul \x01\xff";
        c[at] = gen() % 2 ? pool[gen() % (sizeof pool - 1)] : char(gen() & 0xff);
      }
      attempt(c);
    }
    for (size_t len = 0; len < bytes.size(); len += 3) attempt(bytes.substr(0, len));
    check(other == 0 && errors > 300 && loaded > 0,
          "fuzzed headers / truncations: " + std::to_string(loaded) + " loaded, " + std::to_string(errors) +
              " mixq::Error, " + std::to_string(other) + " other");
    remove_tree(dir);
  }

  {  // a single-file model (model.safetensors) written by write_safetensors loads and matches
    const std::string dir = make_temp_dir("single");
    fs::copy_file(tiny_model_dir() + "/config.json", dir + "/config.json");
    auto store = WeightStore::open(tiny_model_dir());
    std::vector<TensorView> all;
    for (const std::string& n : store->names()) all.push_back(store->get(n));
    write_safetensors(dir + "/model.safetensors", all, {{"format", "pt"}});
    auto a = Model::load(dir, EngineOptions{});
    auto b = Model::load(tiny_model_dir(), EngineOptions{});
    Context ca(a), cb(b);
    EvalCapture xa, xb;
    ca.eval({1, 473, 6498}, xa);
    cb.eval({1, 473, 6498}, xb);
    check(xa.logits == xb.logits, "single-file model.safetensors (written by write_safetensors) gives identical logits");
    remove_tree(dir);
  }
  return finish();
}
