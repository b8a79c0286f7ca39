// The CPU backend: host memory, synchronous ops on a thread pool shared by every virtual CPU device.
// `cpu:N` devices are the same memory with separate arenas: the device checker, not the hardware, keeps a
// tensor of one from being read by another without an explicit copy (how placement is tested without GPUs).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "attention_cpu.h"
#include "core/backend.h"
#include "core/op_args.h"
#include "core/error.h"
#include "cpu_features.h"
#include "cpu_linear.h"
#include "linear_awq.h"
#include "linear_transposed.h"
#include "ops/argmax.h"
#include "ops/embed.h"
#include "ops/moe.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/router.h"
#include "thread_pool.h"

namespace mixq {

namespace {

#define REQUIRE(cond, op, what) MIXQ_CHECK_ARG(cond, std::string(op), what)

// Reads a "Key:   N kB" line of /proc/meminfo; 0 when unavailable.
size_t meminfo_bytes(const char* key) {
  std::ifstream f("/proc/meminfo");
  std::string line;
  const size_t klen = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, klen, key) == 0 && line.size() > klen && line[klen] == ':') {
      std::istringstream s(line.substr(klen + 1));
      size_t kb = 0;
      s >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

// One pool per thread count, shared by the virtual devices that ask for it while any of them lives.
std::shared_ptr<ThreadPool> shared_pool(int threads) {
  static std::mutex m;
  static std::map<int, std::weak_ptr<ThreadPool>> pools;
  std::lock_guard<std::mutex> lock(m);
  std::shared_ptr<ThreadPool> p = pools[threads].lock();
  if (!p) {
    p = std::make_shared<ThreadPool>(threads);
    pools[threads] = p;
  }
  return p;
}

// Bytes held by one virtual device: allocations and mapped weights.
struct Arena {
  std::atomic<size_t> bytes{0}, peak{0};
  void add(size_t n) {
    const size_t now = bytes.fetch_add(n) + n;
    size_t p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
  }
  void sub(size_t n) { bytes.fetch_sub(n); }
};

class CpuBuffer final : public Buffer {
 public:
  CpuBuffer(size_t bytes, Device dev, std::shared_ptr<Arena> arena)
      : size_(bytes), dev_(dev), arena_(std::move(arena)) {
    // 64-byte alignment: one cache line, one AVX-512 register.
    const size_t rounded = (bytes + 63) / 64 * 64;
    data_ = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    if (rounded && !data_) throw Error(dev.str() + ": out of memory allocating " + std::to_string(bytes) + " bytes");
    arena_->add(size_);
  }
  ~CpuBuffer() override {
    std::free(data_);
    arena_->sub(size_);
  }
  void* data() override { return data_; }
  size_t size() const override { return size_; }
  Device device() const override { return dev_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  Device dev_;
  std::shared_ptr<Arena> arena_;
};

// Checkpoint memory (the mapping) owned by this device's arena without a copy.
class MappedBuffer final : public Buffer {
 public:
  MappedBuffer(const void* p, size_t bytes, Device dev, std::shared_ptr<const void> keep, std::shared_ptr<Arena> arena)
      : p_(const_cast<void*>(p)), size_(bytes), dev_(dev), keep_(std::move(keep)), arena_(std::move(arena)) {
    arena_->add(size_);
  }
  ~MappedBuffer() override { arena_->sub(size_); }
  void* data() override { return p_; }
  size_t size() const override { return size_; }
  Device device() const override { return dev_; }

 private:
  void* p_;
  size_t size_;
  Device dev_;
  std::shared_ptr<const void> keep_;
  std::shared_ptr<Arena> arena_;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(Device dev, int threads) : dev_(dev), pool_(shared_pool(threads)), arena_(std::make_shared<Arena>()) {}

  Device device() const override { return dev_; }
  std::string name() const override {
    return dev_.str() + " (" + cpu_simd_level() + ", " + std::to_string(pool_->size()) + " threads)";
  }
  std::vector<std::string> features() const override { return cpu_features(); }
  int threads() const override { return pool_->size(); }
  size_t free_memory() const override { return meminfo_bytes("MemAvailable"); }
  size_t total_memory() const override { return meminfo_bytes("MemTotal"); }
  size_t arena_bytes() const override { return arena_->bytes.load(); }
  size_t peak_arena_bytes() const override { return arena_->peak.load(); }

  std::shared_ptr<Buffer> alloc(size_t bytes) override { return std::make_shared<CpuBuffer>(bytes, dev_, arena_); }

  Tensor upload(const TensorView& t, std::shared_ptr<const void> keep) override {
    Tensor out;
    out.dtype = t.dtype;
    out.shape = t.shape;
    out.name = t.name;
    out.buffer = std::make_shared<MappedBuffer>(t.data, t.nbytes, dev_, std::move(keep), arena_);
    return out;
  }

  // Every op opens a ProfileScope first (one flag test while profiling is off); `bytes` is what it reads + writes.
  void from_host(const void* src, size_t bytes, Tensor& dst) override {
    ProfileScope prof(profiler(), "from_host");
    if (prof) prof.bytes = 2 * bytes;
    op_args::from_host(dev_, bytes, dst);
    std::memcpy(dst.raw(), src, bytes);
  }

  void to_host(const Tensor& src, void* dst, size_t bytes) override {
    ProfileScope prof(profiler(), "to_host");
    if (prof) prof.bytes = 2 * bytes;
    op_args::to_host(dev_, src, bytes);
    std::memcpy(dst, src.raw(), bytes);
  }

  void copy(const Tensor& src, Tensor& dst) override {
    ProfileScope prof(profiler(), "copy");
    if (prof) prof.bytes = 2 * src.nbytes();
    op_args::copy(dev_, src, dst);
    const Device other = src.device() == dev_ ? dst.device() : src.device();
    REQUIRE(other.kind == DeviceKind::Cpu, "copy", "on " + dev_.str() + ": " + other.str() + " is not host memory");
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
  }

  std::unique_ptr<Event> record() override { return std::make_unique<Event>(); }
  void wait(const Event&) override {}
  void synchronize() override {}

  std::unique_ptr<Linear> prepare_linear(const LinearSource& src) override {
    std::unique_ptr<CpuLinear> l = src.weight && src.transposed ? make_transposed_f32_linear(*src.weight)
                                   : src.weight ? make_dense_linear(*src.weight)
                                                : make_awq_linear(*src.qweight, *src.qzeros, *src.scales, src.quant);
    l->name = src.name;
    l->device = dev_;
    // Read in place from the mapping; the arena counts the bytes for as long as the handle lives.
    const TensorView& first = src.weight ? *src.weight : *src.qweight;
    const size_t bytes = src.weight ? src.weight->nbytes
                                    : src.qweight->nbytes + src.qzeros->nbytes + src.scales->nbytes;
    l->residency = std::make_shared<MappedBuffer>(first.data, bytes, dev_, nullptr, arena_);
    return l;
  }

  void embed(const Tensor& table, const Tensor& ids, Tensor& x) override {
    ProfileScope prof(profiler(), "embed");
    if (prof) prof.bytes = size_t(ids.numel()) * table.row_size() * dtype_size(table.dtype) + ids.nbytes() + x.nbytes();
    op_args::embed(dev_, table, ids, x);
    embed_rows(table.raw(), table.dtype, table.rows(), table.row_size(), ids.data<int32_t>(), ids.numel(),
               x.data<float>());
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    ProfileScope prof(profiler(), "rms_norm");
    if (prof) prof.bytes = x.nbytes() + w.nbytes() + y.nbytes();
    op_args::rms_norm(dev_, x, w, y);
    mixq::rms_norm(x.data<float>(), w.data<float>(), x.rows(), x.row_size(), eps, y.data<float>());
  }

  void rope(Tensor& x, const Tensor& positions, const Tensor& inv_freq, int heads, int head_dim) override {
    ProfileScope prof(profiler(), "rope");
    if (prof) prof.bytes = 2 * x.nbytes() + positions.nbytes() + inv_freq.nbytes();
    op_args::rope(dev_, x, positions, inv_freq, heads, head_dim);
    rope_rows(x.data<float>(), x.rows(), heads, head_dim, positions.data<int32_t>(), inv_freq.data<float>());
  }

  DType kv_dtype() const override { return DType::F32; }

  // Synchronous: the host n_past places the rows (positions is only checked).
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                 const Tensor& positions, int64_t n_past, const AttentionShape& s, Tensor& out) override {
    ProfileScope prof(profiler(), "attention");
    // q, k, v in; k, v appended to the caches; the caches' rows [0, n_past + n) read; out written.
    if (prof) prof.bytes = q.nbytes() + 2 * (k.nbytes() + v.nbytes()) + out.nbytes() +
                           2 * size_t(n_past + q.rows()) * k_cache.row_size() * sizeof(float);
    op_args::attention(dev_, q, k, v, k_cache, v_cache, positions, n_past, s, kv_dtype(), out);
    const int64_t n = q.rows(), kv_dim = int64_t(s.kv_heads) * s.head_dim;
    std::memcpy(k_cache.data<float>() + n_past * kv_dim, k.raw(), k.nbytes());
    std::memcpy(v_cache.data<float>() + n_past * kv_dim, v.raw(), v.nbytes());
    mixq::attention(q.data<float>(), n, n_past, k_cache.data<float>(), v_cache.data<float>(), s, out.data<float>(),
                    *pool_);
  }

  void linear(const Linear& w, const Tensor& x, Tensor& y) override {
    ProfileScope prof(profiler(), "linear");
    if (prof) prof.bytes = w.weight_bytes() + x.nbytes() + y.nbytes();
    op_args::linear(dev_, w, x, y);
    static_cast<const CpuLinear&>(w).forward(x.data<float>(), x.rows(), y.data<float>(), *pool_);
  }

  void router(const Tensor& logits, int top_k, bool renormalize, Tensor& ids, Tensor& weights) override {
    ProfileScope prof(profiler(), "router");
    if (prof) prof.bytes = logits.nbytes() + ids.nbytes() + weights.nbytes();
    op_args::router(dev_, logits, top_k, ids, weights);
    const int64_t n = logits.rows(), E = logits.row_size();
    for (int64_t t = 0; t < n; ++t) {
      router_topk(logits.data<float>() + t * E, int(E), top_k, renormalize, ids.data<int32_t>() + t * top_k,
                  weights.data<float>() + t * top_k);
    }
  }

  void moe_experts(const ExpertSet& set, const Tensor& x, const Tensor& ids, const Tensor& weights,
                   Tensor& slots) override;

  void moe_combine(const std::vector<const Tensor*>& slots, const std::vector<int>& owner, const Tensor& ids,
                   Tensor& out) override {
    ProfileScope prof(profiler(), "moe_combine");
    if (prof) prof.bytes = ids.nbytes() + size_t(ids.numel()) * out.row_size() * sizeof(float) + out.nbytes();
    op_args::moe_combine(dev_, slots, owner, ids, out);
    std::vector<const float*> rows;
    for (const Tensor* s : slots) rows.push_back(s->data<float>());
    const int k = int(ids.row_size());
    moe_combine_rows(rows, owner, ids.data<int32_t>(), ids.rows(), k, out.row_size(), out.data<float>());
  }

  void argmax(const Tensor& x, Tensor& ids) override {
    ProfileScope prof(profiler(), "argmax");
    if (prof) prof.bytes = x.nbytes() + ids.nbytes();
    op_args::argmax(dev_, x, ids);
    argmax_rows(x.data<float>(), x.rows(), x.row_size(), ids.data<int32_t>());
  }

  void add(const Tensor& a, const Tensor& b, Tensor& y) override {
    ProfileScope prof(profiler(), "add");
    if (prof) prof.bytes = a.nbytes() + b.nbytes() + y.nbytes();
    op_args::add(dev_, a, b, y);
    const float *pa = a.data<float>(), *pb = b.data<float>();
    float* py = y.data<float>();
    for (int64_t i = 0, n = a.numel(); i < n; ++i) py[i] = pa[i] + pb[i];
  }

  void swiglu(Tensor& a, const Tensor& b) override {
    ProfileScope prof(profiler(), "swiglu");
    if (prof) prof.bytes = 2 * a.nbytes() + b.nbytes();
    op_args::swiglu(dev_, a, b);
    float* pa = a.data<float>();
    const float* pb = b.data<float>();
    pool_->parallel_for(a.numel(), [&](int64_t lo, int64_t hi) { mixq::swiglu(pa + lo, pb + lo, hi - lo); });
  }

 private:
  Device dev_;
  std::shared_ptr<ThreadPool> pool_;
  std::shared_ptr<Arena> arena_;
};

// Routed slots grouped by expert (ascending), only for the experts this device holds.
struct Route {
  int expert = 0;
  std::vector<int64_t> rows;   // tokens routed to this expert
  std::vector<int64_t> slots;  // their slot index t·k + j
  std::vector<float> y;        // expert output [rows, hidden]
};

void CpuBackend::moe_experts(const ExpertSet& set, const Tensor& x, const Tensor& ids, const Tensor& weights,
                             Tensor& slots) {
  ProfileScope prof(profiler(), "moe_experts");
  op_args::moe_experts(dev_, x, ids, weights, slots);
  const int64_t n = x.rows(), hidden = x.row_size();
  const int k = int(ids.row_size());
  const int E = int(set.experts.size());
  const int32_t* id = ids.data<int32_t>();
  std::vector<Route> routes;
  for (int e = 0; e < E; ++e) {
    if (!set.experts[size_t(e)]) continue;
    Route r;
    r.expert = e;
    for (int64_t t = 0; t < n; ++t)
      for (int j = 0; j < k; ++j)
        if (id[t * k + j] == e) {
          r.rows.push_back(t);
          r.slots.push_back(t * k + j);
        }
    if (!r.rows.empty()) routes.push_back(std::move(r));
  }
  if (prof) {  // the routed experts' weights once each, x in, the slots out
    prof.bytes = x.nbytes() + ids.nbytes() + weights.nbytes() + slots.nbytes();
    for (const Route& r : routes) {
      const ExpertWeights& ex = *set.experts[size_t(r.expert)];
      prof.bytes += ex.w1->weight_bytes() + ex.w2->weight_bytes() + ex.w3->weight_bytes();
    }
  }
  for (const Route& r : routes) {
    const ExpertWeights& ex = *set.experts[size_t(r.expert)];
    check_linear_device("moe_experts", dev_, *ex.w1);
    check_linear_device("moe_experts", dev_, *ex.w2);
    check_linear_device("moe_experts", dev_, *ex.w3);
  }
  const float* xp = x.data<float>();
  // y = w2(silu(w1·x) * (w3·x)) over the expert's tokens only.
  auto run_expert = [&](Route& r, ThreadPool& p) {
    const ExpertWeights& ex = *set.experts[size_t(r.expert)];
    const int64_t m = int64_t(r.rows.size()), inter = ex.w1->out_features;
    std::vector<float> xin;
    const float* xe = xp;
    if (m != n) {  // gather the routed tokens: xin [m, hidden]
      xin.resize(size_t(m * hidden));
      for (int64_t i = 0; i < m; ++i) std::copy(xp + r.rows[i] * hidden, xp + (r.rows[i] + 1) * hidden, &xin[i * hidden]);
      xe = xin.data();
    }
    std::vector<float> a(size_t(m * inter)), b(size_t(m * inter));
    r.y.resize(size_t(m * hidden));
    static_cast<const CpuLinear&>(*ex.w1).forward(xe, m, a.data(), p);
    static_cast<const CpuLinear&>(*ex.w3).forward(xe, m, b.data(), p);
    mixq::swiglu(a.data(), b.data(), m * inter);
    static_cast<const CpuLinear&>(*ex.w2).forward(a.data(), m, r.y.data(), p);
  };
  // A few tokens (decode) with at least one routed expert per thread: one expert per thread, each streaming its
  // three matrices alone — one fork-join per layer instead of three per expert. Otherwise experts run one after
  // another, each matmul split over the pool. Either way every matmul computes the same sums.
  ThreadPool& pool = *pool_;
  if (n <= 4 && pool.size() > 1 && int(routes.size()) >= pool.size()) {
    pool.parallel_for(int64_t(routes.size()), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) run_expert(routes[size_t(i)], pool);  // nested: runs inline
    });
  } else {
    for (Route& r : routes) run_expert(r, pool);
  }
  const float* w = weights.data<float>();
  float* out = slots.data<float>();
  for (const Route& r : routes) {
    for (size_t i = 0; i < r.rows.size(); ++i) {
      float* o = out + r.slots[i] * hidden;
      const float* yr = &r.y[i * size_t(hidden)];
      const float wt = w[r.slots[i]];
      for (int64_t c = 0; c < hidden; ++c) o[c] = yr[c] * wt;
    }
  }
}

const bool registered = register_backend(BackendFactory{
    DeviceKind::Cpu,
    [] { return std::vector<Device>{Device{DeviceKind::Cpu, 0, 0}}; },
    [](const Device& d, const BackendOptions& o) -> std::unique_ptr<Backend> {
      return std::make_unique<CpuBackend>(d, o.threads);
    }});

}  // namespace

}  // namespace mixq
