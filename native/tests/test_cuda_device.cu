// Device placement on the GPU: the DeviceGuard restores the previous device; every op entry rejects host
// pointers and pointers of another GPU with a clear error; an entry called while another GPU is current still
// runs on its tensors' GPU and leaves the current device alone; the CudaBackend allocates, copies, checks
// ranges and reports OOM naming the device. Parts that need two GPUs print why they are skipped.
#include <cstdint>

#include "cuda_backend.h"
#include "gemv_w4a16.h"
#include "moe_align_block_size.h"
#include "rms_norm.h"
#include "test_cuda_util.h"

using mixq::DType;
using mixq::cuda::DeviceBuffer;
using mixq::cuda::DeviceGuard;

namespace {

int current_device() {
  int d = -1;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void test_guard(int n) {
  const int before = current_device();
  { DeviceGuard g(before); EXPECT(current_device() == before, "guard on the current device moved it"); }
  EXPECT(current_device() == before, "device not restored");
  test::expect_error("guard on a missing ordinal", [&] { DeviceGuard g(n); }, {"cuda:", "does not exist"});
  EXPECT(current_device() == before, "a failed guard changed the current device");
  test::expect_error("CUDA_CHECK names call and line", [] { CUDA_CHECK(cudaSetDevice(-5)); },
                     {"cudaErrorInvalidDevice", "cudaSetDevice(-5)", "test_cuda_device.cu:"});
  if (n < 2) {
    std::printf("  guard across devices: skipped (needs 2 GPUs, %d visible)\n", n);
    return;
  }
  CUDA_CHECK(cudaSetDevice(1));
  {
    DeviceGuard g(0);
    EXPECT(current_device() == 0, "guard did not switch to cuda:0");
    EXPECT(g.previous() == 1, "guard's previous device is %d", g.previous());
  }
  EXPECT(current_device() == 1, "guard did not restore cuda:1");
  try {
    DeviceGuard g(0);
    throw mixq::Error("thrown inside the guarded scope");
  } catch (const mixq::Error&) {
  }
  EXPECT(current_device() == 1, "guard did not restore cuda:1 when unwinding");
  CUDA_CHECK(cudaSetDevice(0));
  std::printf("  guard across devices: restores after scope exit and after a throw\n");
}

void test_tensor_checks() {
  DeviceBuffer dev(0, 256);
  std::vector<float> pageable(64);
  void* pinned = nullptr;
  CUDA_CHECK(cudaMallocHost(&pinned, 256));
  test::expect_error("null", [&] { mixq::cuda::device_of_tensors("op", {{dev.data(), "a"}, {nullptr, "b"}}); },
                     {"op", "'b'", "null"});
  test::expect_error("pageable", [&] { mixq::cuda::device_of_tensors("op", {{dev.data(), "a"}, {pageable.data(), "b"}}); },
                     {"'b'", "pageable host memory"});
  test::expect_error("pinned", [&] { mixq::cuda::device_of_tensors("op", {{pinned, "a"}, {dev.data(), "b"}}); },
                     {"'a'", "pinned host memory"});
  EXPECT(mixq::cuda::device_of_tensors("op", {{dev.data(), "a"}, {dev.as<char>() + 16, "b"}}) == 0,
         "device memory of cuda:0 not recognised");
  CUDA_CHECK(cudaFreeHost(pinned));
}

// Each entry with one host pointer in place of a device tensor.
void test_entries_reject_host() {
  const int hidden = 256;
  DeviceBuffer x(0, hidden * 2), w(0, hidden * 2), y(0, hidden * 2);
  std::vector<uint16_t> host(hidden);
  test::expect_error("rms_norm host weight",
                     [&] { mixq::cuda::rms_norm(x.data(), host.data(), y.data(), 1, hidden, 1e-5f, DType::F16, DType::F16, 0); },
                     {"rms_norm", "'weight'", "host memory"});

  DeviceBuffer topk(0, 4 * 4), sorted(0, 64 * 4), eids(0, 64 * 4), post(0, 4);
  std::vector<int32_t> host_ids(64);
  test::expect_error("moe_align host expert_ids",
                     [&] {
                       mixq::cuda::moe_align_block_size(topk.as<int32_t>(), 4, 4, 4, sorted.as<int32_t>(),
                                                        host_ids.data(), post.as<int32_t>(), 0);
                     },
                     {"moe_align_block_size", "'expert_ids'", "host memory"});

  const int64_t in = 128, out = 64;
  DeviceBuffer gx(0, in * 2), qw(0, in * out / 2), qz(0, out / 2), sc(0, out * 2), gy(0, out * 4),
      ws(0, mixq::cuda::gemv_w4a16_workspace_bytes(out));
  std::vector<__half> host_scales(out);
  test::expect_error("gemv host scales",
                     [&] {
                       mixq::cuda::gemv_w4a16(gx.as<__half>(), qw.as<int32_t>(), qz.as<int32_t>(), host_scales.data(),
                                              gy.data(), DType::F32, in, out, 128, ws.data(), ws.size(), 0);
                     },
                     {"gemv_w4a16", "'scales'", "host memory"});
}

// With ≥ 2 GPUs: a tensor on the other GPU is rejected; an entry called while cuda:1 is current runs on cuda:0
// (its tensors' device), gives the right answer and leaves cuda:1 current; a stream of cuda:1 is rejected.
void test_cross_device(int n) {
  if (n < 2) {
    std::printf("  cross-device checks: skipped (needs 2 GPUs, %d visible); host-pointer checks ran above\n", n);
    return;
  }
  const int hidden = 64;
  std::vector<float> hx(hidden), hw(hidden, 1.0f);
  for (int i = 0; i < hidden; ++i) hx[i] = float(i % 7) - 3.0f;
  DeviceBuffer x = test::upload(hx, 0), w = test::upload(hw, 0), y0(0, hidden * 4), y1(1, hidden * 4);
  test::expect_error("rms_norm y on cuda:1",
                     [&] { mixq::cuda::rms_norm(x.data(), w.data(), y1.data(), 1, hidden, 1e-5f, DType::F32, DType::F32, 0); },
                     {"rms_norm", "'y'", "cuda:1", "cuda:0"});
  DeviceBuffer topk(0, 16), sorted(1, 256), eids(0, 256), post(0, 4);
  test::expect_error("moe_align sorted on cuda:1",
                     [&] {
                       mixq::cuda::moe_align_block_size(topk.as<int32_t>(), 4, 4, 4, sorted.as<int32_t>(),
                                                        eids.as<int32_t>(), post.as<int32_t>(), 0);
                     },
                     {"'sorted_token_ids'", "cuda:1"});

  CUDA_CHECK(cudaSetDevice(1));
  mixq::cuda::rms_norm(x.data(), w.data(), y0.data(), 1, hidden, 1e-5f, DType::F32, DType::F32, 0);
  EXPECT(current_device() == 1, "the entry changed the current device");
  const auto got = test::download<float>(y0, hidden);
  double ss = 0;
  for (float v : hx) ss += double(v) * v;
  const double r = 1.0 / std::sqrt(ss / hidden + 1e-5);
  for (int i = 0; i < hidden; ++i)
    EXPECT(std::fabs(got[i] - hx[i] * r) < 1e-5, "cross-device rms_norm wrong at %d", i);
  cudaStream_t s1;
  CUDA_CHECK(cudaStreamCreate(&s1));  // on cuda:1
  test::expect_error("stream of cuda:1",
                     [&] { mixq::cuda::rms_norm(x.data(), w.data(), y0.data(), 1, hidden, 1e-5f, DType::F32, DType::F32, s1); },
                     {"stream", "cuda:1", "cuda:0"});
  CUDA_CHECK(cudaStreamDestroy(s1));
  CUDA_CHECK(cudaSetDevice(0));
  std::printf("  cross-device checks ran on %d GPUs\n", n);
}

void test_backend(int n) {
  const auto ids = mixq::cuda_device_ids();
  EXPECT(static_cast<int>(ids.size()) == n, "cuda_device_ids() lists %zu devices, %d visible", ids.size(), n);
  for (int id : ids) {
    auto backend = mixq::make_cuda_backend(mixq::Device{mixq::DeviceKind::Cuda, id, 0});
    auto* cuda_backend = dynamic_cast<mixq::CudaBackend*>(backend.get());
    EXPECT(cuda_backend != nullptr && cuda_backend->ordinal() == id && cuda_backend->stream() != nullptr,
           "not a CudaBackend for cuda:%d", id);
    EXPECT(backend->device().kind == mixq::DeviceKind::Cuda && backend->device().index == id, "device() wrong");
    const std::string prefix = "cuda:" + std::to_string(id) + " ";
    EXPECT(backend->name().rfind(prefix, 0) == 0, "name '%s' lacks '%s'", backend->name().c_str(), prefix.c_str());
    EXPECT(backend->total_memory() > 0 && backend->free_memory() <= backend->total_memory(), "memory figures");
    std::printf("  backend %s: %zu MiB free of %zu MiB\n", backend->name().c_str(), backend->free_memory() >> 20,
                backend->total_memory() >> 20);

    const int64_t bytes = 3 << 20;
    mixq::Tensor buf = backend->empty(mixq::DType::U8, {bytes}, "bytes");
    EXPECT(buf.buffer->size() == size_t(bytes) && buf.device() == backend->device(), "buffer size/device");
    std::vector<uint8_t> src(bytes), back(bytes / 2);
    for (int64_t i = 0; i < bytes; ++i) src[i] = static_cast<uint8_t>(i * 131 + 7);
    backend->from_host(src.data(), bytes, buf);
    backend->to_host(buf.slice_rows(bytes / 4, bytes / 2), back.data(), bytes / 2);
    EXPECT(std::equal(back.begin(), back.end(), src.begin() + bytes / 4), "round trip through cuda:%d differs", id);
    backend->synchronize();
    mixq::Tensor tail = buf.slice_rows(bytes - 8, 8);
    test::expect_error("copy past the end", [&] { backend->from_host(src.data(), 16, tail); },
                       {"exceeds tensor", "cuda"});
    const std::string where = "on cuda:" + std::to_string(id);
    test::expect_error("OOM", [&] { backend->alloc(size_t(1) << 52); }, {"out of GPU memory", where.c_str()});
    auto after = backend->alloc(1 << 20);  // an OOM leaves the device usable
    EXPECT(after->data() != nullptr, "allocation after OOM failed");
  }
  test::expect_error("make_cuda_backend(n)", [&] { mixq::make_cuda_backend(mixq::Device{mixq::DeviceKind::Cuda, n, 0}); },
                     {"no CUDA device", "visible"});
}

}  // namespace

int main() {
  test::skip_without_gpu();
  const int n = mixq::cuda::visible_device_count();
  std::printf("  %d GPU(s) visible\n", n);
  test_guard(n);
  test_tensor_checks();
  test_entries_reject_host();
  test_cross_device(n);
  test_backend(n);
  return test::finish("test_cuda_device");
}
