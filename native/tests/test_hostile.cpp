// Hostile input (issue 15): inputs a careless user or an attacker gives the engine end in a clear mixq::Error naming
// the file, field or flag — never a crash, a hang or runaway memory. One case per reproduced report.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine.h"
#include "file.h"
#include "json.h"
#include "model_config.h"
#include "safetensors.h"
#include "test_util.h"
#include "thread_pool.h"

using namespace mixq;
using namespace mixq_test;
namespace fs = std::filesystem;

namespace {


// A safetensors file with `header` as its JSON header and `data` as its data region.
void write_raw_safetensors(const std::string& path, std::string header, const std::string& data = "") {
  while ((8 + header.size()) % 8) header += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  write_file(path, out + header + data);
}

// The fixture model with every file a symlink; replace() swaps one for something else.
struct ModelCopy {
  std::string dir;
  explicit ModelCopy(const std::string& tag) : dir(make_temp_dir(tag)) {
    for (const auto& e : fs::directory_iterator(tiny_model_dir()))
      fs::create_symlink(e.path(), fs::path(dir) / e.path().filename());
  }
  ~ModelCopy() { remove_tree(dir); }
  std::string path(const std::string& f) const { return dir + "/" + f; }
  void fifo(const std::string& f) const {
    fs::remove(path(f));
    if (::mkfifo(path(f).c_str(), 0600) != 0) std::perror("mkfifo");
  }
  void link(const std::string& f, const std::string& target) const {
    fs::remove(path(f));
    fs::create_symlink(target, path(f));
  }
  void edit_config(const std::string& from, const std::string& to) const {
    std::string s = read_file(path("config.json"));
    const size_t at = s.find(from);
    if (at == std::string::npos) {
      std::printf("test setup: \"%s\" not found in config.json\n", from.c_str());
      std::exit(1);
    }
    s.replace(at, from.size(), to);
    fs::remove(path("config.json"));
    write_file(path("config.json"), s);
  }
};

void load(const std::string& dir, int threads = 1) {
  EngineOptions o;
  o.threads = threads;
  Model::load(dir, o);
}

// Peak RSS growth (bytes) of running `fn` in a child process (fork before any thread exists).
long child_peak_growth(const std::function<void()>& fn, bool* threw) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    struct rusage before, after;
    ::getrusage(RUSAGE_SELF, &before);
    char ok = 1;
    try {
      fn();
    } catch (const std::exception& e) {
      ok = 0;
      std::printf("  (child: %s)\n", std::string(e.what()).substr(0, 160).c_str());
    }
    ::getrusage(RUSAGE_SELF, &after);
    const long growth = (after.ru_maxrss - before.ru_maxrss) * 1024;
    if (::write(fds[1], &growth, sizeof growth) < 0 || ::write(fds[1], &ok, 1) < 0) _exit(2);
    std::fflush(stdout);
    _exit(0);
  }
  ::close(fds[1]);
  long growth = -1;
  char ok = 0;
  if (::read(fds[0], &growth, sizeof growth) != sizeof growth || ::read(fds[0], &ok, 1) != 1) growth = -1;
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  *threw = !ok;
  return growth;
}

// A header of n tensors, each a 4-byte F32 scalar [1] (names "t0000000".."): the entries of a legal file.
std::string many_tensor_header(size_t n, std::string* data) {
  std::string h = "{";
  char buf[128];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%s\"t%07zu\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}", i ? "," : "", i,
                  i * 4, i * 4 + 4);
    h += buf;
  }
  h += "}";
  data->assign(n * 4, '\0');
  return h;
}

}  // namespace

int main() {
  // A hang is a failure, not a stuck CI job: every case below answers in well under a minute.
  ::alarm(600);
  const std::string tmp = make_temp_dir("hostile");

  {  // Safetensors header memory follows the header (streamed, one entry at a time), before any thread exists.
    std::string data;
    const size_t n = 200000;
    const std::string header = many_tensor_header(n, &data);
    const std::string path = tmp + "/many.safetensors";
    write_raw_safetensors(path, header, data);
    bool threw = false;
    size_t count = 0;
    const long growth = child_peak_growth([&] { count = SafetensorsFile(path).tensors().size(); }, &threw);
    const double ratio = double(growth) / double(header.size());
    check(!threw && growth > 0 && ratio < 12.0,
          "a " + std::to_string(header.size() >> 20) + " MiB header of " + std::to_string(n) + " tensors peaks at " +
              std::to_string(growth >> 20) + " MiB (" + fmt(ratio) + "x the header; the JSON tree took ~30x)");
    fs::remove(path);
  }
  {  // The shard index is read as a JSON tree (small per entry: a key and a string): its peak, measured and bounded.
    const std::string dir = tmp + "/index";
    fs::create_directory(dir);
    std::string index = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
    const size_t n = 300000;
    char buf[160];
    for (size_t i = 0; i < n; ++i) {
      std::snprintf(buf, sizeof buf, "%s\"model.layers.%zu.block_sparse_moe.experts.%zu.w1.weight\": \"model-%05zu-of-00099.safetensors\"",
                    i ? ", " : "", i / 1000, i % 1000, i % 99 + 1);
      index += buf;
    }
    index += "}}";
    write_file(dir + "/model.safetensors.index.json", index);
    bool threw = false;
    const long growth = child_peak_growth([&] { WeightStore::open(dir); }, &threw);  // throws: the shards are absent
    const double ratio = double(growth) / double(index.size());
    check(threw && growth > 0 && ratio < 12.0, "a " + std::to_string(index.size() >> 20) + " MiB shard index of " + std::to_string(n) +
          " entries peaks at " + std::to_string(growth >> 20) + " MiB (" + fmt(ratio) + "x the file)");
    remove_tree(dir);
  }
  {  // More tensors in one file than the cap: refused, naming the limit.
    std::string data;
    const std::string header = many_tensor_header(kMaxSafetensorsTensors + 1, &data);
    const std::string path = tmp + "/too-many.safetensors";
    write_raw_safetensors(path, header, data);
    check_throws([&] { SafetensorsFile f(path); }, {path, "more than 1048576 tensors"}, "a header over the tensor-count cap");
    fs::remove(path);
  }
  {  // Shapes whose byte size wraps 64 or 128 bits get the true size, not the wrapped one.
    const std::string path = tmp + "/shape.safetensors";
    write_raw_safetensors(path, R"({"huge":{"dtype":"U8","shape":[4611686018427387904,4611686018427387904,16],"data_offsets":[0,0]}})");
    check_throws([&] { SafetensorsFile f(path); }, {"huge", "needs more than 2^128 bytes"}, "shape [2^62, 2^62, 16] with 0 bytes");
    write_raw_safetensors(path, R"({"wide":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})");
    check_throws([&] { SafetensorsFile f(path); }, {"wide", "needs 73786976294838206464 bytes"}, "shape [2^32, 2^32] F32");
    write_raw_safetensors(path, R"({"empty":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,0],"data_offsets":[0,0]}})");
    bool ok = true;
    try { SafetensorsFile f(path); } catch (const std::exception& e) { ok = false; std::printf("%s\n", e.what()); }
    check(ok, "a zero dimension makes 0 bytes whatever the others are");
    fs::remove(path);
  }
  {  // Thread counts: bounded, validated, the maximum named; a refused start leaves nothing running.
    check_throws([] { resolve_thread_count(100000); }, {"threads", "100000", "at most 256"}, "--threads 100000");
    check_throws([] { ThreadPool p(100000); }, {"at most 256"}, "a pool of 100000 threads");
    check(resolve_thread_count(0) >= 1 && resolve_thread_count(0) <= kMaxThreads, "threads 0 = the hardware threads");
    int refused = 0;
    for (int i = 0; i < 20; ++i) {
      ThreadPool::fail_worker_start_after_for_tests(3);
      try {
        ThreadPool p(16);
      } catch (const Error& e) {
        if (std::string(e.what()).find("cannot start 16 threads") != std::string::npos) ++refused;
      }
    }
    ThreadPool::fail_worker_start_after_for_tests(-1);
    check(refused == 20, "the OS refusing the 4th worker: a clear error 20 times out of 20, no crash");
    ThreadPool p(8);
    std::atomic<int64_t> sum{0};
    p.parallel_for(1000, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; });
    check(sum == 499500, "a pool built after the refusals works");
    check_throws([] { load(tiny_model_dir(), 100000); }, {"threads", "100000", "at most 256"}, "Model::load with threads 100000");
  }
  {  // Files of the model folder that are not regular files: refused at once, naming the file and what it is.
    ModelCopy m("fifo-config");
    m.fifo("config.json");
    check_throws([&] { load(m.dir); }, {m.path("config.json"), "FIFO", "not a regular file"}, "config.json a FIFO");
  }
  {
    ModelCopy m("zero-config");
    m.link("config.json", "/dev/zero");
    check_throws([&] { load(m.dir); }, {m.path("config.json"), "character device"}, "config.json a symlink to /dev/zero");
  }
  {
    ModelCopy m("big-config");
    fs::remove(m.path("config.json"));
    { std::ofstream f(m.path("config.json")); }
    fs::resize_file(m.path("config.json"), kMaxJsonFileBytes + 1);
    check_throws([&] { load(m.dir); }, {m.path("config.json"), "67108865 bytes exceeds the 64 MiB limit"}, "config.json over the size cap");
  }
  {
    ModelCopy m("fifo-index");
    m.fifo("model.safetensors.index.json");
    check_throws([&] { load(m.dir); }, {"model.safetensors.index.json", "FIFO"}, "the shard index a FIFO");
  }
  {
    ModelCopy m("fifo-shard");
    m.fifo("model-00002-of-00003.safetensors");
    check_throws([&] { load(m.dir); }, {"model-00002-of-00003.safetensors", "FIFO", "not a regular file"},
                 "a shard that is a FIFO (not \"does not exist\")");
  }
  {
    ModelCopy m("dir-shard");
    fs::remove(m.path("model-00002-of-00003.safetensors"));
    fs::create_directory(m.path("model-00002-of-00003.safetensors"));
    check_throws([&] { load(m.dir); }, {"model-00002-of-00003.safetensors", "directory"}, "a shard that is a directory");
  }
  {
    ModelCopy m("text-shard");
    m.link("model-00002-of-00003.safetensors", tiny_model_dir() + "/config.json");
    check_throws([&] { load(m.dir); }, {"model-00002-of-00003.safetensors", "not a safetensors file", "starts with the text"},
                 "a shard linked to a text file");
  }
  {  // config.json vs the checkpoint: nonsense is refused at load, naming both.
    ModelCopy m("layers");
    m.edit_config("\"num_hidden_layers\": 4", "\"num_hidden_layers\": 1");
    check_throws([&] { load(m.dir); }, {"config.json", "num_hidden_layers is 1", "model.safetensors.index.json", "of layer 1"},
                 "num_hidden_layers 1 on a 4-layer checkpoint");
  }
  {
    ModelCopy m("experts");
    m.edit_config("\"num_local_experts\": 8", "\"num_local_experts\": 4");
    m.edit_config("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 2");
    check_throws([&] { load(m.dir); }, {"config.json", "num_local_experts is 4", "of expert 4"}, "num_local_experts 4 on 8 experts");
  }
  {
    ModelCopy m("rope");
    m.edit_config("\"rope_theta\": 1000000.0", "\"rope_theta\": 1e-300");
    check_throws([&] { load(m.dir); }, {"config.json", "rope_theta", "outside the range"}, "rope_theta 1e-300");
  }
  {
    ModelCopy m("eps");
    m.edit_config("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 1e300");
    check_throws([&] { load(m.dir); }, {"config.json", "rms_norm_eps", "outside the range"}, "rms_norm_eps 1e300");
  }
  {
    ModelCopy m("eos");
    m.edit_config("\"eos_token_id\": 2", "\"eos_token_id\": -5");
    check_throws([&] { load(m.dir); }, {"config.json", "eos_token_id", "-5", "vocab_size 8192"}, "eos_token_id -5");
  }
  {
    ModelCopy m("bos");
    m.edit_config("\"bos_token_id\": 1", "\"bos_token_id\": 999999");
    check_throws([&] { load(m.dir); }, {"config.json", "bos_token_id", "999999"}, "bos_token_id 999999");
  }
  {
    ModelCopy m("eos-list");
    m.edit_config("\"eos_token_id\": 2", "\"eos_token_id\": [2, 8192]");
    check_throws([&] { load(m.dir); }, {"eos_token_id", "8192"}, "an eos_token_id list with an id past the vocabulary");
  }
  {  // read_regular_file: the cap holds for files that report a small size (nothing here grows unbounded).
    check_throws([] { read_regular_file("/dev/zero", 1024, "a test file"); }, {"/dev/zero", "character device"},
                 "read_regular_file refuses /dev/zero");
  }
  remove_tree(tmp);
  return finish();
}
