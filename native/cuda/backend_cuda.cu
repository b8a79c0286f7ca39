// The CUDA backend (cuda_backend.h): every entry checks its tensors' devices (the engine's checker, which knows
// logical devices), opens a DeviceGuard for the GPU and launches on the backend's own non-blocking stream.
// Memory: DeviceBuffers counted in the device's arena; weights uploaded at prepare time (AWQ stays packed).
// Copies to or from the host wait for the stream; copies between devices (copy_between) are peer copies where the
// driver allows, else staged through pinned host memory — ordered by events, never by the host, so recordable.
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "attention.h"
#include "core/op_args.h"
#include "cuda_backend.h"
#include "cuda_check.h"
#include "device_buffer.h"
#include "device_guard.h"
#include "expert_table.h"
#include "gemm_w4a16.h"
#include "gemv_w4a16.h"
#include "moe_align_block_size.h"
#include "ops_cuda.h"
#include "ops/router.h"
#include "rms_norm.h"

namespace mixq {
namespace {


using cuda::DeviceBuffer;
using cuda::DeviceGuard;

struct Arena {
  std::atomic<size_t> bytes{0}, peak{0};
  void add(size_t n) {
    const size_t now = bytes.fetch_add(n) + n;
    size_t p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
  }
};

// A backend's stream, owned jointly by the backend and the buffers it allocated: a staged copy out of a buffer
// runs on the stream of the device that wrote it, even one whose backend is gone.
class Stream {
 public:
  explicit Stream(int ordinal) : ordinal_(ordinal) {
    DeviceGuard guard(ordinal);
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~Stream() {
    DeviceGuard guard(ordinal_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  int ordinal_;
  cudaStream_t stream_ = nullptr;
};

class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(const Device& d, size_t bytes, std::shared_ptr<Arena> arena, std::shared_ptr<Stream> stream)
      : dev_(d), mem_(d.index, bytes), arena_(std::move(arena)), stream_(std::move(stream)) {
    arena_->add(bytes);
  }
  ~CudaBuffer() override { arena_->bytes.fetch_sub(mem_.size()); }
  void* data() override { return mem_.data(); }
  size_t size() const override { return mem_.size(); }
  Device device() const override { return dev_; }
  cudaStream_t stream() const { return stream_->get(); }

 private:
  Device dev_;
  DeviceBuffer mem_;
  std::shared_ptr<Arena> arena_;
  std::shared_ptr<Stream> stream_;
};

class CudaEvent final : public Event {
 public:
  CudaEvent(int ordinal, cudaStream_t stream) : ordinal_(ordinal) {
    DeviceGuard guard(ordinal);
    CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(event_, stream));
  }
  ~CudaEvent() override {
    DeviceGuard guard(ordinal_);
    cudaEventDestroy(event_);
  }
  cudaEvent_t get() const { return event_; }

 private:
  int ordinal_;
  cudaEvent_t event_ = nullptr;
};

class CudaGraph final : public Graph {
 public:
  CudaGraph(int ordinal, cudaStream_t stream, cudaGraphExec_t exec) : ordinal_(ordinal), stream_(stream), exec_(exec) {}
  ~CudaGraph() override {
    DeviceGuard guard(ordinal_);
    cudaGraphExecDestroy(exec_);
  }
  void replay() override {
    DeviceGuard guard(ordinal_);
    CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
  }

 private:
  int ordinal_;
  cudaStream_t stream_;
  cudaGraphExec_t exec_;
};

// MIXQ_CUDA_GRAPHS=0 switches recording off (every step then launches its kernels one by one).
bool graphs_allowed() {
  const char* v = std::getenv("MIXQ_CUDA_GRAPHS");
  return !(v && std::strcmp(v, "0") == 0);
}

// MIXQ_CUDA_STAGED_COPIES=1: copies between devices go through pinned host memory even where a direct copy is
// possible (logical devices of one GPU too), so the staged path is tested on one GPU.
bool staged_copies_forced() {
  const char* v = std::getenv("MIXQ_CUDA_STAGED_COPIES");
  return v && std::strcmp(v, "1") == 0;
}

// Whether `to` can read `from`'s memory directly; peer access is enabled once per ordered pair, on first use.
bool peer_access(int to, int from) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, bool> known;
  const std::lock_guard<std::mutex> lock(mu);
  const auto it = known.find({to, from});
  if (it != known.end()) return it->second;
  int can = 0;
  CUDA_CHECK(cudaDeviceCanAccessPeer(&can, to, from));
  if (can) {
    DeviceGuard guard(to);
    const cudaError_t e = cudaDeviceEnablePeerAccess(from, 0);
    if (e == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
    else CUDA_CHECK(e);
  }
  return known[{to, from}] = can != 0;
}

// A weight handle: the uploaded tensors (dense [out, in] or transposed [in, out]; or AWQ's three).
class CudaLinear final : public Linear {
 public:
  Tensor weight, qweight, qzeros, scales;
  bool transposed = false;
  int group = 0;
  std::string kind_;
  // Row o of W for references and tests: the tensors are read back once and dequantized on the host exactly as
  // the kernels do ((q − z)·s for AWQ).
  void weight_row(int64_t o, float* dst) const override;
  size_t weight_bytes() const override {
    return weight.buffer ? weight.nbytes() : qweight.nbytes() + qzeros.nbytes() + scales.nbytes();
  }
  std::string kind() const override { return kind_; }
};

class CudaBackendImpl;

// Times one op with CUDA events while the device's profiler is on (nothing at all while it is off). Events are
// resolved into the profiler when the stream is next synchronised (to_host, synchronize).
class GpuOpScope {
 public:
  GpuOpScope(CudaBackendImpl& b, const char* name);
  ~GpuOpScope();
  GpuOpScope(const GpuOpScope&) = delete;
  GpuOpScope& operator=(const GpuOpScope&) = delete;

 private:
  CudaBackendImpl* b_ = nullptr;
  const char* name_;
  cudaEvent_t start_ = nullptr;
};

class CudaBackendImpl final : public CudaBackend {
  friend class GpuOpScope;

 public:
  explicit CudaBackendImpl(const Device& d)
      : dev_(d), owned_stream_(std::make_shared<Stream>(d.index)), stream_(owned_stream_->get()),
        arena_(std::make_shared<Arena>()) {
    DeviceGuard guard(d.index);
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, d.index));
    name_ = d.str() + " " + prop.name;
  }
  ~CudaBackendImpl() override {
    DeviceGuard guard(dev_.index);
    cudaStreamSynchronize(stream_);
    for (const PendingOp& p : pending_) {
      cudaEventDestroy(p.start);
      cudaEventDestroy(p.stop);
    }
    if (base_) cudaEventDestroy(base_);
    if (pinned_) cudaFreeHost(pinned_);
    if (staging_) cudaFreeHost(staging_);
  }

  Device device() const override { return dev_; }
  std::string name() const override { return name_; }
  int ordinal() const override { return dev_.index; }
  CUstream_st* stream() const override { return stream_; }
  size_t free_memory() const override { return mem_info().first; }
  size_t total_memory() const override { return mem_info().second; }
  size_t arena_bytes() const override { return arena_->bytes.load(); }
  size_t peak_arena_bytes() const override { return arena_->peak.load(); }

  std::shared_ptr<Buffer> alloc(size_t bytes) override {
    return std::make_shared<CudaBuffer>(dev_, std::max<size_t>(bytes, 1), arena_, owned_stream_);
  }

  Tensor upload(const TensorView& t, std::shared_ptr<const void>) override {
    Tensor out = empty(t.dtype, t.shape, t.name);
    from_host(t.data, t.nbytes, out);
    return out;
  }

  void from_host(const void* src, size_t bytes, Tensor& dst) override {
    op_args::from_host(dev_, bytes, dst);
    DeviceGuard guard(dev_.index);
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller may free or reuse `src` as soon as we return
  }

  void to_host(const Tensor& src, void* dst, size_t bytes) override {
    op_args::to_host(dev_, src, bytes);
    DeviceGuard guard(dev_.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src.raw(), bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    resolve_profile();
  }

  void copy(const Tensor& src, Tensor& dst) override {
    const Device s = src.device(), d = dst.device();
    op_args::copy(dev_, src, dst);
    DeviceGuard guard(dev_.index);
    if (s.kind == DeviceKind::Cpu || d.kind == DeviceKind::Cpu) {
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDefault, stream_));
      CUDA_CHECK(cudaStreamSynchronize(stream_));  // host memory: complete before the caller touches it
    } else {
      copy_between(src, dst);
    }
  }

  std::unique_ptr<Event> record() override { return std::make_unique<CudaEvent>(dev_.index, stream_); }
  void wait(const Event& e) override {
    const auto* ce = dynamic_cast<const CudaEvent*>(&e);
    if (!ce) return;  // a CPU event: CPU work is complete when its op returns
    DeviceGuard guard(dev_.index);
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ce->get(), 0));
  }
  void synchronize() override {
    DeviceGuard guard(dev_.index);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    resolve_profile();
  }

  bool begin_capture() override {
    // Every op of a step reads what changes per token (ids, positions, n_past) from device memory and sizes its
    // grid from shapes alone, so one recording serves every later step.
    if (profiler().enabled() || !graphs_allowed()) return false;  // profiling times ops one by one
    DeviceGuard guard(dev_.index);
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    return true;
  }
  std::unique_ptr<Graph> end_capture(const std::vector<Backend*>& joined) override {
    DeviceGuard guard(dev_.index);
    join_capture(joined);
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_CHECK(e);
    return std::make_unique<CudaGraph>(dev_.index, stream_, exec);
  }
  void cancel_capture(const std::vector<Backend*>& joined) override {
    DeviceGuard guard(dev_.index);
    if (capturing(stream_)) {
      try {
        join_capture(joined);
      } catch (const Error&) {  // an invalidated capture may refuse the joins: ending it is all that is left
      }
      end_capture_of(stream_);
    }
    for (Backend* b : joined)  // a stream left capturing after the origin's end (not expected): ended too
      if (auto* c = dynamic_cast<CudaBackendImpl*>(b)) {
        DeviceGuard theirs(c->dev_.index);
        end_capture_of(c->stream_);
      }
    cudaGetLastError();  // the failed capture's error is reported by the op that caused it
  }
  uint64_t generation() const override { return generation_; }

  double measure_copy_gbps(size_t bytes) override {
    DeviceGuard guard(dev_.index);
    const Tensor src = empty(DType::U8, {int64_t(bytes)}, "copy probe source");
    Tensor dst = empty(DType::U8, {int64_t(bytes)}, "copy probe destination");
    CUDA_CHECK(cudaMemsetAsync(src.buffer->data(), 1, bytes, stream_));
    cudaEvent_t start = timing_event(), stop = timing_event();
    float best = 1e30f;
    for (int r = 0; r < 6; ++r) {  // the first one warms up
      CUDA_CHECK(cudaEventRecord(start, stream_));
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), bytes, cudaMemcpyDeviceToDevice, stream_));
      CUDA_CHECK(cudaEventRecord(stop, stream_));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (r > 0) best = std::min(best, ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return 2.0 * double(bytes) / (double(best) * 1e-3) / 1e9;
  }

  std::unique_ptr<Linear> prepare_linear(const LinearSource& src) override;

  void embed(const Tensor& table, const Tensor& ids, Tensor& x) override {
    op_args::embed(dev_, table, ids, x);
    // Ids were range-checked on the host by the caller (Context::eval); the kernel clamps as a last guard.
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "embed");
    cuda::launch_embed(table.raw(), table.dtype, table.rows(), table.row_size(), ids.data<int32_t>(), ids.numel(), x.data<float>(),
                       stream_);
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    op_args::rms_norm(dev_, x, w, y);
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "rms_norm");
    cuda::launch_rms_norm(x.raw(), w.raw(), y.raw(), x.rows(), x.row_size(), eps, DType::F32, w.dtype, stream_);
    CUDA_CHECK_LAUNCH();
  }

  void rope(Tensor& x, const Tensor& positions, const Tensor& inv_freq, int heads, int head_dim) override {
    op_args::rope(dev_, x, positions, inv_freq, heads, head_dim);
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "rope");
    cuda::launch_rope(x.data<float>(), x.rows(), heads, head_dim, positions.data<int32_t>(), inv_freq.data<float>(),
                      stream_);
  }

  DType kv_dtype() const override { return DType::F16; }

  // The KV append and the attention read n_past from positions on the device and size their grids from the
  // capacity and n only: a captured launch stays valid for every later step (the host n_past is only checked).
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                 const Tensor& positions, int64_t n_past, const AttentionShape& s, Tensor& out) override {
    op_args::attention(dev_, q, k, v, k_cache, v_cache, positions, n_past, s, kv_dtype(), out);
    if (!cuda::attention_head_dim_supported(s.head_dim))
      throw Error("attention on " + dev_.str() + ": head_dim " + std::to_string(s.head_dim) +
                  " is not supported (32, 64, 96 or 128)");
    const int64_t n = q.rows(), kv_dim = int64_t(s.kv_heads) * s.head_dim;
    const cuda::AttentionDims dims{s.heads, s.kv_heads, s.head_dim, s.window, k_cache.rows()};
    auto* kc = static_cast<__half*>(k_cache.raw());
    auto* vc = static_cast<__half*>(v_cache.raw());
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "attention");
    cuda::launch_kv_append(k.data<float>(), v.data<float>(), positions.data<int32_t>(), n, kv_dim, dims.capacity, kc,
                           vc, stream_);
    if (cuda::attention_use_decode(n, dims)) {
      // Sized by capacity and n: the same buffer for every step of a decode loop.
      const size_t ws_bytes = cuda::attention_decode_workspace_bytes(n, dims);
      Tensor& ws = scratch(DType::F32, {int64_t(ws_bytes / sizeof(float))}, "attention split-K partials");
      cuda::launch_attention_decode(q.data<float>(), kc, vc, positions.data<int32_t>(), n, dims, ws.data<float>(),
                                    out.data<float>(), stream_);
    } else {
      cuda::launch_attention_prefill(q.data<float>(), kc, vc, positions.data<int32_t>(), n, dims, out.data<float>(),
                                     stream_);
    }
  }

  void linear(const Linear& w, const Tensor& x, Tensor& y) override;
  // w1·x and w3·x of one expert (both AWQ, same shape) as one batched int4 GEMV launch over one f16 copy of x.
  bool awq_pair(const Linear& w1, const Linear& w3, const Tensor& x, Tensor& a, Tensor& b);

  void router(const Tensor& logits, int top_k, bool renormalize, Tensor& ids, Tensor& weights) override {
    op_args::router(dev_, logits, top_k, ids, weights);
    const int64_t n = logits.rows(), E = logits.row_size();
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "router");
    cuda::launch_router(logits.data<float>(), n, int(E), top_k, renormalize, ids.data<int32_t>(),
                        weights.data<float>(), stream_);
  }

  void moe_experts(const ExpertSet& set, const Tensor& x, const Tensor& ids, const Tensor& weights,
                   Tensor& slots) override;
  // Prefill MoE on the tensor cores, routes grouped on the device (no host synchronisation): moe_align_block_size,
  // then the grouped int4 GEMMs gate_up (h = silu(x·w1ᵀ) ⊙ x·w3ᵀ, fp16) and down (slots = weight · h·w2ᵀ).
  bool moe_experts_grouped(const ExpertSet& set, const Tensor& x, const Tensor& ids, const Tensor& weights,
                           Tensor& slots);

  void moe_combine(const std::vector<const Tensor*>& slots, const std::vector<int>& owner, const Tensor& ids,
                   Tensor& out) override {
    op_args::moe_combine(dev_, slots, owner, ids, out);
    cuda::CombineSources src{};
    for (size_t i = 0; i < slots.size(); ++i) {
      src.slots[i] = slots[i]->data<float>();
    }
    for (size_t e = 0; e < owner.size(); ++e) {
      src.owner[e] = uint8_t(owner[e]);
    }
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "moe_combine");
    cuda::launch_moe_combine(src, ids.data<int32_t>(), ids.rows(), int(ids.row_size()), out.row_size(),
                             out.data<float>(), stream_);
  }

  void argmax(const Tensor& x, Tensor& ids) override {
    op_args::argmax(dev_, x, ids);
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "argmax");
    cuda::launch_argmax(x.data<float>(), x.rows(), x.row_size(), ids.data<int32_t>(), stream_);
  }

  void add(const Tensor& a, const Tensor& b, Tensor& y) override {
    op_args::add(dev_, a, b, y);
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "add");
    cuda::launch_add(a.data<float>(), b.data<float>(), y.data<float>(), a.numel(), stream_);
  }

  void swiglu(Tensor& a, const Tensor& b) override {
    op_args::swiglu(dev_, a, b);
    DeviceGuard guard(dev_.index);
    GpuOpScope scope(*this, "swiglu");
    cuda::launch_swiglu(a.data<float>(), b.data<float>(), a.numel(), stream_);
  }

 private:
  // dst = src between two CUDA devices (or logical devices), queued on this stream (already ordered after src's
  // producer by the caller): a same-GPU or peer copy; into this device, staged through pinned host memory where
  // the GPUs cannot reach each other or MIXQ_CUDA_STAGED_COPIES=1 (elsewhere the driver stages a peer copy).
  void copy_between(const Tensor& src, Tensor& dst) {
    const Device s = src.device(), d = dst.device();
    const bool direct = s.index == d.index || peer_access(d.index, s.index);
    if (s != d && d == dev_ && (!direct || staged_copies_forced())) {
      copy_staged(src, dst);
    } else if (s.index == d.index) {
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    } else {
      CUDA_CHECK(cudaMemcpyPeerAsync(dst.raw(), d.index, src.raw(), s.index, src.nbytes(), stream_));
    }
  }
  // Through this backend's pinned staging buffer: the source's stream (that of the backend that allocated src)
  // copies device → host once this stream's earlier reads of the buffer are done; this stream copies host →
  // device once that copy is. Two events, no host synchronisation: recordable in a graph.
  void copy_staged(const Tensor& src, Tensor& dst) {
    const size_t bytes = src.nbytes();
    void* host = staging(bytes);
    const auto* owner = dynamic_cast<const CudaBuffer*>(src.buffer.get());
    const cudaStream_t src_stream = owner ? owner->stream() : stream_;
    const int src_ordinal = src.device().index;
    const CudaEvent reads_done(dev_.index, stream_);
    {
      DeviceGuard guard(src_ordinal);
      CUDA_CHECK(cudaStreamWaitEvent(src_stream, reads_done.get(), 0));
      CUDA_CHECK(cudaMemcpyAsync(host, src.raw(), bytes, cudaMemcpyDeviceToHost, src_stream));
    }
    const CudaEvent staged(src_ordinal, src_stream);
    CUDA_CHECK(cudaStreamWaitEvent(stream_, staged.get(), 0));
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), host, bytes, cudaMemcpyHostToDevice, stream_));
  }
  // Pinned host bytes for staged copies into this device, grown (outside a recording: a new buffer changes the
  // generation) after the copies still reading the old one are done.
  void* staging(size_t bytes) {
    if (staging_bytes_ < bytes) {
      CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (staging_) CUDA_CHECK(cudaFreeHost(staging_));
      staging_ = nullptr;
      staging_bytes_ = 0;
      CUDA_CHECK(cudaMallocHost(&staging_, bytes));
      staging_bytes_ = bytes;
      ++generation_;
    }
    return staging_;
  }
  // Before the origin (this stream) ends a recording: every joined backend's stream that takes part in the same
  // capture records an event the origin waits on (stream capture's rule: every fork joined back).
  void join_capture(const std::vector<Backend*>& joined) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    unsigned long long id = 0;
    CUDA_CHECK(cudaStreamGetCaptureInfo(stream_, &status, &id));
    if (status != cudaStreamCaptureStatusActive) return;
    for (Backend* b : joined) {
      auto* c = dynamic_cast<CudaBackendImpl*>(b);
      if (!c || c->stream_ == stream_) continue;
      cudaStreamCaptureStatus their = cudaStreamCaptureStatusNone;
      unsigned long long their_id = 0;
      {
        DeviceGuard guard(c->dev_.index);
        CUDA_CHECK(cudaStreamGetCaptureInfo(c->stream_, &their, &their_id));
      }
      if (their != cudaStreamCaptureStatusActive || their_id != id) continue;
      const CudaEvent tail(c->dev_.index, c->stream_);
      CUDA_CHECK(cudaStreamWaitEvent(stream_, tail.get(), 0));
    }
  }
  static bool capturing(cudaStream_t stream) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    return cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
  }
  static void end_capture_of(cudaStream_t stream) {
    if (!capturing(stream)) return;
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
  }

  std::pair<size_t, size_t> mem_info() const {
    DeviceGuard guard(dev_.index);
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return {free_b, total_b};
  }
  // f16 copy of x for the int4 GEMV, and its split-K workspace (zeroed once; every call leaves it zeroed).
  Tensor& half_x(int64_t elems) {
    if (!x16_.buffer || x16_.numel() < elems) {
      x16_ = empty(DType::F16, {elems}, "x as f16");
      ++generation_;
    }
    return x16_;
  }
  void* gemv_workspace(int64_t out, int batch) {
    const size_t need = cuda::gemv_w4a16_workspace_bytes(out, batch);
    if (!gemv_ws_.buffer || gemv_ws_.nbytes() < need) {
      gemv_ws_ = empty(DType::U8, {int64_t(need)}, "gemv workspace");
      CUDA_CHECK(cudaMemsetAsync(gemv_ws_.raw(), 0, need, stream_));
      ++generation_;
    }
    return gemv_ws_.raw();
  }

  // Temporaries of the ops, one per role, grown when a call needs more (work on one stream is ordered, so reuse
  // across calls is safe).
  Tensor& scratch(DType dt, std::vector<int64_t> shape, const std::string& role) {
    Tensor& t = scratch_[role];
    Tensor want;
    want.dtype = dt;
    want.shape = shape;
    if (!t.buffer || t.buffer->size() < want.nbytes()) {
      t = empty(dt, shape, role);
      ++generation_;
      return t;
    }
    t.dtype = dt;
    t.shape = std::move(shape);
    return t;
  }
  // The device table of a layer's experts (expert_table.h), built on first use and cached per set; null when
  // the set's experts are not all AWQ matrices of one group size and of the first one's shapes.
  struct ExpertTable {
    std::vector<cuda::ExpertMatrices> host;
    Tensor device;
    int group = 0;
    int64_t hidden = 0, inter = 0;
  };
  const ExpertTable* expert_table(const ExpertSet& set);
  bool moe_experts_routed(const ExpertSet& set, const Tensor& x, const Tensor& ids, const Tensor& weights,
                          Tensor& slots);
  // The same for 16-bit (or f32) dense experts: [num_experts · 3] weight pointers (w1, w3, w2), null where not held;
  // null when the held experts are not all dense [out, in] of one dtype and shape.
  struct DenseTable {
    std::vector<const void*> host;
    Tensor device;
    DType dtype = DType::F32;
    int64_t hidden = 0, inter = 0;
  };
  const DenseTable* dense_table(const ExpertSet& set);
  template <class Entry>
  void keep_table(const ExpertSet& set, std::vector<Entry> host, std::vector<Entry>& kept, Tensor& device,
                  const char* name);
  bool moe_experts_routed_dense(const ExpertSet& set, const Tensor& x, const Tensor& ids, const Tensor& weights,
                                Tensor& slots);

  // Pinned host ints for asynchronous uploads of routes.
  int32_t* pinned_ints(int64_t count) {
    if (pinned_count_ < count) {
      if (pinned_) cudaFreeHost(pinned_);
      pinned_ = nullptr;
      CUDA_CHECK(cudaMallocHost(&pinned_, size_t(count) * sizeof(int32_t)));
      pinned_count_ = count;
    }
    return static_cast<int32_t*>(pinned_);
  }

  // ---- profiling: events of ops not yet resolved, against a base event recorded on an idle stream ----------
  struct PendingOp {
    const char* name;
    cudaEvent_t start, stop;
  };
  cudaEvent_t timing_event() {
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
  void ensure_profile_base() {
    if (base_) return;
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    base_ = timing_event();
    CUDA_CHECK(cudaEventRecord(base_, stream_));
    CUDA_CHECK(cudaEventSynchronize(base_));
    base_us_ = Profiler::now_us();
  }
  void resolve_profile() {
    if (pending_.empty()) return;
    for (const PendingOp& p : pending_) {
      float at_ms = 0, dur_ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&at_ms, base_, p.start));
      CUDA_CHECK(cudaEventElapsedTime(&dur_ms, p.start, p.stop));
      profiler().record(p.name, 0, base_us_ + 1000.0 * at_ms, 1000.0 * dur_ms);
      cudaEventDestroy(p.start);
      cudaEventDestroy(p.stop);
    }
    pending_.clear();
    cudaEventDestroy(base_);
    base_ = nullptr;  // a fresh base at the next profiled op: event times drift from the host clock over long runs
  }

  Device dev_;
  std::string name_;
  std::shared_ptr<Stream> owned_stream_;
  cudaStream_t stream_ = nullptr;  // owned_stream_'s
  std::shared_ptr<Arena> arena_;
  void* staging_ = nullptr;  // pinned host memory of staged copies into this device
  size_t staging_bytes_ = 0;
  Tensor x16_, gemv_ws_;
  std::vector<PendingOp> pending_;
  cudaEvent_t base_ = nullptr;
  double base_us_ = 0;
  std::map<std::string, Tensor> scratch_;
  void* pinned_ = nullptr;
  int64_t pinned_count_ = 0;
  std::map<const ExpertSet*, ExpertTable> tables_;
  std::map<const ExpertSet*, DenseTable> dense_tables_;
  uint64_t generation_ = 0;
};

GpuOpScope::GpuOpScope(CudaBackendImpl& b, const char* name) : name_(name) {
  if (!b.profiler().enabled()) return;
  b_ = &b;
  b.ensure_profile_base();
  start_ = b.timing_event();
  CUDA_CHECK(cudaEventRecord(start_, b.stream_));
}

GpuOpScope::~GpuOpScope() {
  if (!b_) return;
  cudaEvent_t stop = nullptr;
  if (cudaEventCreate(&stop) != cudaSuccess || cudaEventRecord(stop, b_->stream_) != cudaSuccess) {
    cudaEventDestroy(start_);
    return;
  }
  b_->pending_.push_back({name_, start_, stop});
}

std::unique_ptr<Linear> CudaBackendImpl::prepare_linear(const LinearSource& src) {
  auto l = std::make_unique<CudaLinear>();
  l->name = src.name;
  l->device = dev_;
  if (src.weight) {
    l->weight = upload(*src.weight, nullptr);
    l->transposed = src.transposed;
    l->out_features = src.transposed ? src.weight->shape[1] : src.weight->shape[0];
    l->in_features = src.transposed ? src.weight->shape[0] : src.weight->shape[1];
    l->kind_ = std::string(src.transposed ? "f32-transposed" : dtype_name(src.weight->dtype));
  } else {
    validate_awq_quant_config(src.quant, src.name);
    l->qweight = upload(*src.qweight, nullptr);
    l->qzeros = upload(*src.qzeros, nullptr);
    l->scales = upload(*src.scales, nullptr);
    l->in_features = src.qweight->shape[0];
    l->out_features = src.qweight->shape[1] * 8;
    l->group = src.quant.group_size == -1 ? int(l->in_features) : src.quant.group_size;
    l->kind_ = "awq-int4-g" + std::to_string(l->group);
  }
  return l;
}

// Host bytes of a device tensor (any backend: waits for all work on the device first).
std::vector<char> download(const Tensor& t) {
  std::vector<char> h(t.nbytes());
  DeviceGuard guard(t.device().index);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(h.data(), t.raw(), h.size(), cudaMemcpyDeviceToHost));
  return h;
}

float to_f32(const char* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    default: return reinterpret_cast<const float*>(p)[i];
  }
}

void CudaLinear::weight_row(int64_t o, float* dst) const {
  const int64_t in = in_features, out = out_features;
  if (weight.buffer) {
    const std::vector<char> w = download(weight);
    for (int64_t i = 0; i < in; ++i) dst[i] = to_f32(w.data(), weight.dtype, transposed ? i * out + o : o * in + i);
    return;
  }
  const std::vector<char> qw = download(qweight), qz = download(qzeros), sc = download(scales);
  const auto* q = reinterpret_cast<const uint32_t*>(qw.data());
  const auto* z = reinterpret_cast<const uint32_t*>(qz.data());
  const int shift = 4 * ((o & 7) / 2 + 4 * (o & 1));
  for (int64_t i = 0; i < in; ++i) {
    const int64_t g = i / group;
    const int qv = (q[i * (out / 8) + o / 8] >> shift) & 0xF, zv = (z[g * (out / 8) + o / 8] >> shift) & 0xF;
    dst[i] = float(qv - zv) * to_f32(sc.data(), DType::F16, g * out + o);
  }
}

void CudaBackendImpl::linear(const Linear& w, const Tensor& x, Tensor& y) {
  op_args::linear(dev_, w, x, y);
  const auto& l = static_cast<const CudaLinear&>(w);
  DeviceGuard guard(dev_.index);
  GpuOpScope scope(*this, l.weight.buffer ? "linear" : "linear_awq");
  const int64_t n = x.rows(), in = w.in_features, out = w.out_features;
  if (l.weight.buffer) {
    cuda::launch_linear_dense(x.data<float>(), l.weight.raw(), l.weight.dtype, l.transposed, y.data<float>(), n, in,
                              out, stream_);
    return;
  }
  const bool gemv = n <= cuda::kGemvMaxBatch && out % 32 == 0 && (l.group == 32 || l.group == 64 || l.group == 128);
  if (!gemv && n > cuda::kGemvMaxBatch && out % 32 == 0 && in % 32 == 0 && l.group % 32 == 0) {
    // Prefill: the tensor-core int4 GEMM over an f16 copy of x.
    Tensor& x16 = half_x(n * in);
    cuda::launch_f32_to_f16(x.data<float>(), x16.raw(), n * in, stream_);
    cuda::launch_gemm_w4a16(static_cast<const __half*>(x16.raw()), l.qweight.data<int32_t>(), l.qzeros.data<int32_t>(),
                            static_cast<const __half*>(l.scales.raw()), y.data<float>(), n, in, out, l.group, stream_);
    return;
  }
  if (!gemv) {
    cuda::launch_linear_awq(x.data<float>(), l.qweight.data<int32_t>(), l.qzeros.data<int32_t>(), l.scales.raw(),
                            l.group, y.data<float>(), n, in, out, stream_);
    return;
  }
  // Decode: the int4 GEMV (x rounded to f16). One token: x read as f32 and rounded in registers; a few: one
  // problem per token in one launch over an f16 copy of x.
  if (n == 1) {
    cuda::launch_gemv_w4a16_f32x(x.data<float>(), l.qweight.data<int32_t>(), l.qzeros.data<int32_t>(),
                                 static_cast<const __half*>(l.scales.raw()), y.data<float>(), in, out, l.group,
                                 gemv_workspace(out, 1),
                                 cuda::gemv_w4a16_default_config(in, out, l.group, dev_.index, 1), stream_);
    return;
  }
  Tensor& x16 = half_x(n * in);
  cuda::launch_f32_to_f16(x.data<float>(), x16.raw(), n * in, stream_);
  cuda::GemvW4A16Problem problems[cuda::kGemvMaxBatch];
  for (int64_t t = 0; t < n; ++t) {
    problems[t].x = static_cast<const __half*>(x16.raw()) + t * in;
    problems[t].qweight = l.qweight.data<int32_t>();
    problems[t].qzeros = l.qzeros.data<int32_t>();
    problems[t].scales = static_cast<const __half*>(l.scales.raw());
    problems[t].y = y.data<float>() + t * out;
  }
  const cuda::GemvW4A16Config cfg = cuda::gemv_w4a16_default_config(in, out, l.group, dev_.index, int(n));
  cuda::launch_gemv_w4a16(problems, int(n), DType::F32, in, out, l.group, gemv_workspace(out, int(n)), cfg, stream_);
}

bool CudaBackendImpl::awq_pair(const Linear& w1, const Linear& w3, const Tensor& x, Tensor& a, Tensor& b) {
  const auto& l1 = static_cast<const CudaLinear&>(w1);
  const auto& l3 = static_cast<const CudaLinear&>(w3);
  const int64_t n = x.rows(), in = w1.in_features, out = w1.out_features;
  if (l1.weight.buffer || l3.weight.buffer || 2 * n > cuda::kGemvMaxBatch || out % 32 != 0 ||
      w3.in_features != in || w3.out_features != out || l1.group != l3.group ||
      (l1.group != 32 && l1.group != 64 && l1.group != 128)) {
    return false;
  }
  DeviceGuard guard(dev_.index);
  GpuOpScope scope(*this, "linear_awq_pair");
  Tensor& x16 = half_x(n * in);
  cuda::launch_f32_to_f16(x.data<float>(), x16.raw(), n * in, stream_);
  cuda::GemvW4A16Problem problems[cuda::kGemvMaxBatch];
  for (int64_t t = 0; t < 2 * n; ++t) {
    const CudaLinear& l = t < n ? l1 : l3;
    problems[t].x = static_cast<const __half*>(x16.raw()) + (t % n) * in;
    problems[t].qweight = l.qweight.data<int32_t>();
    problems[t].qzeros = l.qzeros.data<int32_t>();
    problems[t].scales = static_cast<const __half*>(l.scales.raw());
    problems[t].y = (t < n ? a : b).data<float>() + (t % n) * out;
  }
  const int count = int(2 * n);
  const cuda::GemvW4A16Config cfg = cuda::gemv_w4a16_default_config(in, out, l1.group, dev_.index, count);
  cuda::launch_gemv_w4a16(problems, count, DType::F32, in, out, l1.group, gemv_workspace(out, count), cfg, stream_);
  return true;
}

void CudaBackendImpl::moe_experts(const ExpertSet& set, const Tensor& x, const Tensor& ids, const Tensor& weights,
                                  Tensor& slots) {
  op_args::moe_experts(dev_, x, ids, weights, slots);
  if (moe_experts_routed(set, x, ids, weights, slots)) return;   // decode: int4 GEMV, routes read on the device
  if (moe_experts_routed_dense(set, x, ids, weights, slots)) return;  // decode, 16-bit experts: the same
  if (moe_experts_grouped(set, x, ids, weights, slots)) return;  // prefill: tensor cores, routes grouped on the device
  const int64_t n = x.rows(), hidden = x.row_size();
  const int k = int(ids.row_size());
  // 1. The routes come back to the host once (the one synchronisation of the layer) and are grouped by expert:
  //    rows (token of each slot) and slot indices, expert after expert, uploaded in one asynchronous copy from
  //    pinned memory (reused only after the next synchronisation, which waits for that copy).
  DeviceGuard guard(dev_.index);
  std::vector<int32_t> id(size_t(ids.numel()));
  to_host(ids, id.data(), ids.nbytes());
  const int64_t slots_n = n * k;
  int32_t* lists = pinned_ints(2 * slots_n);  // [rows of every expert..., slot indices of every expert...]
  struct Group { int expert; int64_t begin, count; };
  std::vector<Group> groups;
  int64_t m_max = 0, at = 0;
  for (size_t e = 0; e < set.experts.size(); ++e) {
    if (!set.experts[e]) continue;
    const int64_t begin = at;
    for (int64_t s = 0; s < slots_n; ++s)
      if (id[size_t(s)] == int32_t(e)) {
        lists[at] = int32_t(s / k);
        lists[slots_n + at] = int32_t(s);
        ++at;
      }
    if (at > begin) {
      groups.push_back({int(e), begin, at - begin});
      m_max = std::max(m_max, at - begin);
      check_linear_device("moe_experts", dev_, *set.experts[e]->w1);
    }
  }
  if (groups.empty()) return;
  Tensor& list_t = scratch(DType::I32, {2 * slots_n}, "moe routes");
  CUDA_CHECK(cudaMemcpyAsync(list_t.raw(), lists, size_t(2 * slots_n) * 4, cudaMemcpyHostToDevice, stream_));
  // 2. Per expert, on its rows only: gather, w1 and w3, SwiGLU, w2, weighted scatter into the slots.
  const int64_t inter = set.experts[size_t(groups[0].expert)]->w1->out_features;
  Tensor& xe_all = scratch(DType::F32, {m_max * hidden}, "moe expert input");
  Tensor& a_all = scratch(DType::F32, {m_max * inter}, "moe gate");
  Tensor& b_all = scratch(DType::F32, {m_max * inter}, "moe up");
  Tensor& ye_all = scratch(DType::F32, {m_max * hidden}, "moe expert output");
  for (const Group& g : groups) {
    const ExpertWeights& ex = *set.experts[size_t(g.expert)];
    Tensor xe = xe_all.reshaped({m_max, hidden}).slice_rows(0, g.count);
    Tensor a = a_all.reshaped({m_max, inter}).slice_rows(0, g.count);
    Tensor b = b_all.reshaped({m_max, inter}).slice_rows(0, g.count);
    Tensor ye = ye_all.reshaped({m_max, hidden}).slice_rows(0, g.count);
    cuda::launch_gather_rows(x.data<float>(), list_t.data<int32_t>() + g.begin, g.count, hidden, xe.data<float>(),
                             stream_);
    if (!awq_pair(*ex.w1, *ex.w3, xe, a, b)) {
      linear(*ex.w1, xe, a);
      linear(*ex.w3, xe, b);
    }
    swiglu(a, b);
    linear(*ex.w2, a, ye);
    cuda::launch_scatter_weighted(ye.data<float>(), list_t.data<int32_t>() + slots_n + g.begin, g.count, hidden,
                                  weights.data<float>(), slots.data<float>(), stream_);
  }
}

// The matrices of one expert as table entries, when all three are AWQ with `group` (0: take w1's).
bool awq_entry(const ExpertWeights& ex, int& group, cuda::ExpertMatrices& entry) {
  const CudaLinear* parts[3] = {static_cast<const CudaLinear*>(ex.w1.get()),
                                static_cast<const CudaLinear*>(ex.w3.get()),
                                static_cast<const CudaLinear*>(ex.w2.get())};
  for (int i = 0; i < 3; ++i) {
    const CudaLinear* l = parts[i];
    if (!l || l->weight.buffer || !l->qweight.buffer) return false;
    if (group == 0) group = l->group;
    if (l->group != group) return false;
    entry.w[i] = {l->qweight.data<int32_t>(), l->qzeros.data<int32_t>(),
                  static_cast<const __half*>(l->scales.raw())};
  }
  return true;
}

// The held experts' common shapes (w1, w3: [inter, hidden]; w2: [hidden, inter]); false when they differ or none is held.
bool expert_shapes(const ExpertSet& set, int64_t& hidden, int64_t& inter) {
  hidden = inter = 0;
  for (const ExpertWeights* ex : set.experts) {
    if (!ex) continue;
    if (hidden == 0) hidden = ex->w1->in_features, inter = ex->w1->out_features;
    if (ex->w1->in_features != hidden || ex->w3->in_features != hidden || ex->w1->out_features != inter ||
        ex->w3->out_features != inter || ex->w2->in_features != inter || ex->w2->out_features != hidden)
      return false;
  }
  return hidden > 0;
}

// Keeps `host` as a device table: uploads it (after checking the experts' devices) on first use, or when the set
// now at this address holds other matrices; the table's buffer then changes, so recorded graphs are redone.
template <class Entry>
void CudaBackendImpl::keep_table(const ExpertSet& set, std::vector<Entry> host, std::vector<Entry>& kept, Tensor& device,
                                 const char* name) {
  const size_t bytes = host.size() * sizeof(Entry);
  if (device.buffer && kept.size() == host.size() && std::memcmp(kept.data(), host.data(), bytes) == 0) return;
  for (const ExpertWeights* ex : set.experts)
    if (ex) check_linear_device("moe_experts", dev_, *ex->w1);
  kept = std::move(host);
  device = empty(DType::U8, {int64_t(bytes)}, name);
  from_host(kept.data(), bytes, device);
  ++generation_;
}

const CudaBackendImpl::ExpertTable* CudaBackendImpl::expert_table(const ExpertSet& set) {
  std::vector<cuda::ExpertMatrices> host(set.experts.size());
  int group = 0;
  int64_t hidden = 0, inter = 0;
  for (size_t e = 0; e < set.experts.size(); ++e)
    if (set.experts[e] && !awq_entry(*set.experts[e], group, host[e])) return nullptr;
  if (!expert_shapes(set, hidden, inter) || inter % 32 != 0 || hidden % 32 != 0 || group % 32 != 0) return nullptr;
  ExpertTable& t = tables_[&set];
  keep_table(set, std::move(host), t.host, t.device, "expert table");
  t.group = group, t.hidden = hidden, t.inter = inter;
  return &t;
}

// Decode (few slots): every slot's expert read on the device from `ids` — no host synchronisation, so the step
// can be recorded as a graph. One routed int4 GEMV for w1 and w3 of every slot (x read as f32, rounded to f16 in
// registers); h = f16(silu(a)·b);
// one routed GEMV for w2 scaled by the router weight, written straight into the slot's row.
bool CudaBackendImpl::moe_experts_routed(const ExpertSet& set, const Tensor& x, const Tensor& ids,
                                         const Tensor& weights, Tensor& slots) {
  const int64_t n = x.rows(), k = ids.row_size(), S = n * k;
  // Each slot streams its expert's matrices: beyond a few slots per expert the grouped GEMM (each expert's
  // matrices read once per block of its rows) moves fewer bytes.
  if (S > 8) return false;
  const ExpertTable* t = expert_table(set);
  if (!t || t->hidden != x.row_size() || (t->group != 32 && t->group != 64 && t->group != 128)) return false;
  DeviceGuard guard(dev_.index);
  GpuOpScope scope(*this, "moe_experts");
  const int64_t hidden = t->hidden, inter = t->inter;
  Tensor& gate_up = scratch(DType::F32, {2 * S, inter}, "moe gate|up");
  Tensor& h16 = scratch(DType::F16, {S, inter}, "moe hidden f16");
  gemv_workspace(inter, int(2 * S));
  void* ws = gemv_workspace(hidden, int(S));  // one buffer, at least the larger of the two needs
  const auto* table = reinterpret_cast<const cuda::ExpertMatrices*>(t->device.raw());
  // x read as f32 and rounded to f16 in the GEMV's registers.
  cuda::GemvW4A16Routes up{ids.data<int32_t>(), table, int(t->host.size()), cuda::kGate, int(S), int(k),
                           x.raw(), true, gate_up.raw(), nullptr};
  cuda::launch_gemv_w4a16_routed(up, 2, DType::F32, hidden, inter, t->group, ws,
                                 cuda::gemv_w4a16_default_config(hidden, inter, t->group, dev_.index, int(2 * S)),
                                 stream_);
  cuda::launch_swiglu_f16(gate_up.data<float>(), gate_up.data<float>() + S * inter, h16.raw(), S * inter, stream_);
  cuda::GemvW4A16Routes down{ids.data<int32_t>(), table, int(t->host.size()), cuda::kDown, int(S), 1,
                             h16.raw(), false, slots.raw(), weights.data<float>()};
  cuda::launch_gemv_w4a16_routed(down, 1, DType::F32, inter, hidden, t->group, ws,
                                 cuda::gemv_w4a16_default_config(inter, hidden, t->group, dev_.index, int(S)),
                                 stream_);
  return true;
}

const CudaBackendImpl::DenseTable* CudaBackendImpl::dense_table(const ExpertSet& set) {
  std::vector<const void*> host(set.experts.size() * 3, nullptr);
  DType dtype = DType::U8;
  int64_t hidden = 0, inter = 0;
  for (size_t e = 0; e < set.experts.size(); ++e) {
    const ExpertWeights* ex = set.experts[e];
    if (!ex) continue;
    const Linear* parts[3] = {ex->w1.get(), ex->w3.get(), ex->w2.get()};
    for (int i = 0; i < 3; ++i) {
      const auto* l = static_cast<const CudaLinear*>(parts[i]);
      if (dtype == DType::U8) dtype = l->weight.dtype;
      if (!l->weight.buffer || l->transposed || l->weight.dtype != dtype) return nullptr;
      host[e * 3 + size_t(i)] = l->weight.raw();
    }
  }
  if (!expert_shapes(set, hidden, inter) || (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32))
    return nullptr;
  const int64_t vec = 16 / int64_t(dtype_size(dtype));
  if (hidden % vec != 0 || inter % vec != 0) return nullptr;
  DenseTable& t = dense_tables_[&set];
  keep_table(set, std::move(host), t.host, t.device, "dense expert table");
  t.dtype = dtype, t.hidden = hidden, t.inter = inter;
  return &t;
}

// Decode with dense experts: gate and up of every slot in one routed launch, SwiGLU in place, down scaled by the
// router weight into the slot's row — the experts found on the device, as the int4 path does.
bool CudaBackendImpl::moe_experts_routed_dense(const ExpertSet& set, const Tensor& x, const Tensor& ids,
                                               const Tensor& weights, Tensor& slots) {
  const int64_t n = x.rows(), k = ids.row_size(), S = n * k;
  if (S > 8) return false;
  const DenseTable* t = dense_table(set);
  if (!t || t->hidden != x.row_size()) return false;
  DeviceGuard guard(dev_.index);
  GpuOpScope scope(*this, "moe_experts");
  const int64_t hidden = t->hidden, inter = t->inter;
  Tensor& gate_up = scratch(DType::F32, {2 * S, inter}, "moe gate|up");
  const auto* table = static_cast<const void* const*>(t->device.raw());
  const cuda::DenseRoutes up{ids.data<int32_t>(), table, int(set.experts.size()), 0, int(S), int(k),
                             x.data<float>(), gate_up.data<float>(), nullptr};
  cuda::launch_moe_dense_gemv(up, 2, t->dtype, hidden, inter, stream_);
  cuda::launch_swiglu(gate_up.data<float>(), gate_up.data<float>() + S * inter, S * inter, stream_);
  const cuda::DenseRoutes down{ids.data<int32_t>(), table, int(set.experts.size()), 2, int(S), 1,
                               gate_up.data<float>(), slots.data<float>(), weights.data<float>()};
  cuda::launch_moe_dense_gemv(down, 1, t->dtype, inter, hidden, stream_);
  return true;
}

const bool registered = register_backend(BackendFactory{
    DeviceKind::Cuda,
    [] {
      std::vector<Device> out;
      for (int id : cuda_device_ids()) out.push_back(Device{DeviceKind::Cuda, id, 0});
      return out;
    },
    [](const Device& d, const BackendOptions&) { return make_cuda_backend(d); }});

}  // namespace

std::vector<int> cuda_device_ids() {
  std::vector<int> ids;
  const int n = cuda::visible_device_count();
  for (int i = 0; i < n; ++i) ids.push_back(i);
  return ids;
}

std::unique_ptr<Backend> make_cuda_backend(const Device& d) {
  const int n = cuda::visible_device_count();
  if (d.kind != DeviceKind::Cuda || d.index < 0 || d.index >= n)
    throw Error("no CUDA device " + d.str() + " (" + std::to_string(n) + " CUDA device(s) visible in this process)");
  return std::make_unique<CudaBackendImpl>(d);
}

}  // namespace mixq

// ---- prefill MoE on the tensor cores (grouped int4 GEMM) ----------------------------------------------------------
namespace mixq {
namespace {

bool CudaBackendImpl::moe_experts_grouped(const ExpertSet& set, const Tensor& x, const Tensor& ids,
                                          const Tensor& weights, Tensor& slots) {
  const int64_t n = x.rows(), numel = ids.numel();
  const int E = int(set.experts.size());
  if (E > cuda::kMoeAlignMaxExperts) return false;
  const ExpertTable* t = expert_table(set);
  if (!t || t->hidden != x.row_size() || t->hidden % t->group != 0 || t->inter % t->group != 0) return false;
  const int64_t hidden = t->hidden, inter = t->inter;
  const int group = t->group;
  const auto* table = reinterpret_cast<const cuda::ExpertMatrices*>(t->device.raw());
  DeviceGuard guard(dev_.index);
  GpuOpScope scope(*this, "moe_experts_grouped");
  cuda::MoeRoutes r;
  r.numel = numel;
  r.top_k = int(ids.row_size());
  r.num_experts = E;
  r.block_rows = cuda::gemm_w4a16_moe_block_rows(numel, E);
  const int64_t capacity = cuda::moe_align_capacity(numel, E, r.block_rows);
  Tensor& sorted = scratch(DType::I32, {capacity}, "moe sorted slots");
  Tensor& blocks = scratch(DType::I32, {cuda::moe_align_max_blocks(numel, E, r.block_rows)}, "moe block experts");
  Tensor& post = scratch(DType::I32, {1}, "moe padded count");
  r.sorted_token_ids = sorted.data<int32_t>();
  r.expert_ids = blocks.data<int32_t>();
  r.num_tokens_post_pad = post.data<int32_t>();
  cuda::launch_moe_align_block_size(ids.data<int32_t>(), numel, E, r.block_rows, sorted.data<int32_t>(),
                                    blocks.data<int32_t>(), post.data<int32_t>(), stream_);
  Tensor& x16 = half_x(n * hidden);
  cuda::launch_f32_to_f16(x.data<float>(), x16.raw(), n * hidden, stream_);
  Tensor& h = scratch(DType::F16, {capacity, inter}, "moe h");  // [sorted row, inter]
  cuda::launch_moe_gemm_w4a16_gate_up(static_cast<const __half*>(x16.raw()), r, table, static_cast<__half*>(h.raw()),
                                      hidden, inter, group, stream_);
  cuda::launch_moe_gemm_w4a16_down(static_cast<const __half*>(h.raw()), r, table, weights.data<float>(),
                                   slots.data<float>(), hidden, inter, group, stream_);
  return true;
}

}  // namespace
}  // namespace mixq
