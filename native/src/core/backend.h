// The backend interface: one object per (logical or virtual) device = allocator + stream + events + the op set.
// Model code talks to this and to nothing device-specific. Each backend library registers a factory for its
// device kind (register_backend); make_backend looks it up. Every op entry checks (checking mode) that all its
// tensors live on its device, and fails naming the op, the tensor and both devices.
//
// Activations are f32 [rows, features] on the CPU; a GPU backend may keep 16-bit activations (Tensor.dtype).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "linear.h"
#include "ops/attention.h"
#include "profiler.h"
#include "tensor.h"

namespace mixq {

// An ordering point on one backend's stream (cross-device dependencies). CPU ops are synchronous.
class Event {
 public:
  virtual ~Event() = default;
};

// Only the experts one device holds: experts[e] is null for an expert held elsewhere.
struct ExpertWeights {
  std::unique_ptr<Linear> w1;  // gate: [inter, hidden]
  std::unique_ptr<Linear> w2;  // down: [hidden, inter]
  std::unique_ptr<Linear> w3;  // up:   [inter, hidden]
};
struct ExpertSet {
  std::vector<const ExpertWeights*> experts;  // [num_experts]
};

// A recorded sequence of one backend's queued ops (a CUDA graph), replayed as a whole: the ops' argument checks ran
// once, when it was recorded. It reads and writes the same buffers every replay.
class Graph {
 public:
  virtual ~Graph() = default;
  virtual void replay() = 0;
};

struct BackendOptions {
  int threads = 0;  // CPU worker threads shared by all virtual CPU devices; 0 = all hardware threads
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu:0 (AVX-512, 2 threads)", "cuda:0 NVIDIA H200"
  virtual std::vector<std::string> features() const { return {}; }  // e.g. CPU ISA extensions
  virtual int threads() const { return 0; }  // host worker threads its ops use (0: none of its own)
  virtual size_t free_memory() const = 0;
  virtual size_t total_memory() const = 0;
  // Bytes this device holds now: its allocations plus weights it maps in place.
  virtual size_t arena_bytes() const = 0;
  virtual size_t peak_arena_bytes() const = 0;
  // The memory ceiling: a copy of `bytes` within this device's memory, GB/s counting read + write, best of 5.
  // 0 where the backend does not measure it itself (the CPU: the host memcpy probe, measure_memcpy_gbps).
  virtual double measure_copy_gbps(size_t /*bytes*/) { return 0; }

  // ---- profiling ----------------------------------------------------------------------------------------------
  // This device's op timings (core/profiler.h), off until switched on. A synchronous backend opens a ProfileScope at
  // each op entry; an asynchronous one records the events it timed itself (Profiler::record).
  Profiler& profiler() const { return profiler_; }

  // ---- memory ---------------------------------------------------------------------------------------------
  // Throws mixq::Error naming the device and the bytes asked on out-of-memory.
  virtual std::shared_ptr<Buffer> alloc(size_t bytes) = 0;
  Tensor empty(DType dtype, std::vector<int64_t> shape, std::string name);
  // A checkpoint tensor resident on this device: the CPU wraps the mapping (no copy; `keep` holds it), a GPU uploads.
  virtual Tensor upload(const TensorView& t, std::shared_ptr<const void> keep) = 0;
  // f32 vector [n] (norm weights) widened from bf16/fp16/f32.
  Tensor upload_f32(const TensorView& t);
  virtual void from_host(const void* src, size_t bytes, Tensor& dst) = 0;
  // Waits for this device's queued work, then copies.
  virtual void to_host(const Tensor& src, void* dst, size_t bytes) = 0;
  // dst = src where one of the two lives on this device and the other on a device it can reach (host memory,
  // another virtual CPU device, a peer GPU). The only op allowed to see a tensor of another device.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;

  // ---- ordering -----------------------------------------------------------------------------------------
  virtual std::unique_ptr<Event> record() = 0;
  virtual void wait(const Event& e) = 0;  // this stream waits for e (recorded on any device)
  virtual void synchronize() = 0;

  // ---- recording (graphs) ---------------------------------------------------------------------------------
  // begin_capture: from now on this backend's ops are recorded, not run (false: this backend cannot record, or
  // recording is switched off — then nothing changes). end_capture returns the recording; cancel_capture drops a
  // recording after an error. Between the two, ops must not synchronise with the host (no to_host, no
  // from_host, no synchronize).
  // Several devices in one recording: a backend of the same kind joins it by waiting (wait) on an event recorded
  // (record) on a recording backend — Devices::to does that for every copy. end_capture and cancel_capture are
  // then called on the backend that began, with every backend that may have joined (`joined`; those that did not
  // are left alone): their queued work is joined back into the recording before it ends. The graph replays on
  // the beginning backend's queue.
  virtual bool begin_capture() { return false; }
  virtual std::unique_ptr<Graph> end_capture(const std::vector<Backend*>& /*joined*/) { return nullptr; }
  virtual void cancel_capture(const std::vector<Backend*>& /*joined*/) {}
  // Changes whenever a buffer that a recorded op may use is replaced (the backend's scratch grew): a graph
  // recorded at another generation must not be replayed.
  virtual uint64_t generation() const { return 0; }

  // ---- weights ------------------------------------------------------------------------------------------
  virtual std::unique_ptr<Linear> prepare_linear(const LinearSource& src) = 0;

  // ---- the op set (shapes and limits: ops/*.h; references: ops/*.cpp) ----------------------------------------
  // x[n, hidden] f32 = rows `ids` [n] i32 of table [vocab, hidden] (bf16/fp16/f32). Ids must be in range: the
  // caller checks them on the host (Context::eval); the CPU throws on a bad one, a GPU clamps it.
  virtual void embed(const Tensor& table, const Tensor& ids, Tensor& x) = 0;
  // y[rows, d] = w[d] ⊙ x / sqrt(mean(x²) + eps); y may alias x. Per-head q/k norms: rows = n·heads, d = head_dim.
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) = 0;
  // x[n, heads·head_dim] rotated in place at positions [n] i32 (rotate_half pairs), inv_freq [head_dim/2] f32.
  virtual void rope(Tensor& x, const Tensor& positions, const Tensor& inv_freq, int heads, int head_dim) = 0;
  // Appends k/v [n, kv_heads·hd] at rows [n_past, n_past+n) of the caches [capacity, kv_heads·hd] (kv_dtype()),
  // then out[n, heads·hd] = causal (windowed) GQA attention of q [n, heads·hd] over cache rows [0, n_past+n).
  // positions [n] i32 on this device (positions[t] = n_past + t, the tensor RoPE uses): a GPU reads n_past there,
  // never from the host value, so a launch captured in a graph serves every later step; the host n_past is for
  // the contract checks (n_past + n ≤ capacity) and for synchronous backends.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                         const Tensor& positions, int64_t n_past, const AttentionShape& shape, Tensor& out) = 0;
  // The dtype of the KV caches this backend's attention reads and writes (the CPU: F32; CUDA: F16).
  virtual DType kv_dtype() const = 0;
  // y[n, out] = x[n, in] · Wᵀ.
  virtual void linear(const Linear& w, const Tensor& x, Tensor& y) = 0;
  // logits [n, E] f32 (E ≤ 256) → softmax (f32) → top-k (k ≤ 8; largest first, lower index on ties):
  // ids [n, k] i32, weights [n, k] f32 (renormalised to sum 1 when `renormalize`).
  virtual void router(const Tensor& logits, int top_k, bool renormalize, Tensor& ids, Tensor& weights) = 0;
  // For every slot (t, j) of ids/weights [n, k] whose expert this device holds:
  //   slots[t·k + j] = weights[t, j] · w2(silu(w1·x[t]) ⊙ (w3·x[t]))       slots: [n·k, hidden] f32
  // computing each expert once over its routed tokens only. Other slots are left as they are.
  virtual void moe_experts(const ExpertSet& experts, const Tensor& x, const Tensor& ids, const Tensor& weights,
                           Tensor& slots) = 0;
  // out[t] = Σ_j slots[owner[ids[t, j]]][t·k + j], the k slots of a token summed in ascending expert order
  // (0 + first + second …): the same order whatever the placement, so results are deterministic.
  virtual void moe_combine(const std::vector<const Tensor*>& slots, const std::vector<int>& owner,
                           const Tensor& ids, Tensor& out) = 0;
  // y = a + b elementwise (y may alias a or b).
  virtual void add(const Tensor& a, const Tensor& b, Tensor& y) = 0;
  // ids[rows] i32 = argmax of each row of x [rows, n] f32 (lowest index on ties; NaN never wins): greedy
  // decoding without bringing the logits to the host.
  virtual void argmax(const Tensor& x, Tensor& ids) = 0;
  // a = silu(a) ⊙ b elementwise (the SwiGLU of an expert whose parts are computed apart: the quantizer).
  virtual void swiglu(Tensor& a, const Tensor& b) = 0;

 private:
  mutable Profiler profiler_;  // mutable: timing an op does not change what a const backend computes
};

// ---- registry: backend libraries register a factory for their device kind at start-up ---------------------
struct BackendFactory {
  DeviceKind kind;
  std::function<std::vector<Device>()> devices;  // the physical devices of this kind usable now
  std::function<std::unique_ptr<Backend>(const Device&, const BackendOptions&)> make;
};
bool register_backend(BackendFactory f);
// Devices usable in this build and machine: cpu:0 always, cuda:N for each visible GPU of a CUDA build.
std::vector<Device> available_devices();
// Creates the backend for `d`; throws mixq::Error when this build or machine has no such device.
std::unique_ptr<Backend> make_backend(const Device& d, const BackendOptions& opts = {});
bool backend_registered(DeviceKind kind);

// ---- checking mode ----------------------------------------------------------------------------------------
// On when MIXQ_CHECK_DEVICES=1 (tests turn it on); every op entry then verifies its tensors' devices.
bool device_checks_enabled();
void set_device_checks(bool on);
struct NamedTensor {
  const char* role;  // "x", "k_cache", ...
  const Tensor* t;
};
// Throws "OP on DEV: tensor ROLE (NAME) lives on OTHER" when a tensor is not on `dev` (checking mode only).
void check_devices(const char* op, const Device& dev, std::initializer_list<NamedTensor> tensors);
void check_linear_device(const char* op, const Device& dev, const Linear& w);

}  // namespace mixq
