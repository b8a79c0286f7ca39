// gemv_w4a16 on the GPU against a plain CPU reference of the AutoAWQ GEMM format, over a table of shapes
// (Mixtral-8x7B and the tiny fixture model's) × group sizes × output dtypes × work splits, plus determinism
// and workspace reuse. The packing here follows FIELD-NOTES.md word for word (slot i of word c holds column
// 8c + ORDER[i]); the reference unpacks with the inverse table, independently of the kernel's bit tricks.
#include <algorithm>
#include <cstdint>

#include "gemv_w4a16.h"
#include "test_cuda_util.h"

using mixq::DType;
using mixq::cuda::DeviceBuffer;
using mixq::cuda::GemvW4A16Config;

namespace {

constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};    // slot → column offset (packing)
constexpr int kUnpack[8] = {0, 4, 1, 5, 2, 6, 3, 7};   // column offset → slot (unpacking)

// q: [rows, cols] values 0..15 → packed int32 [rows, cols/8].
std::vector<int32_t> pack_awq(const std::vector<uint8_t>& q, int64_t rows, int64_t cols) {
  std::vector<int32_t> out(rows * cols / 8, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols / 8; ++c) {
      uint32_t word = 0;
      for (int slot = 0; slot < 8; ++slot) word |= uint32_t(q[r * cols + 8 * c + kOrder[slot]]) << (4 * slot);
      out[r * (cols / 8) + c] = static_cast<int32_t>(word);
    }
  return out;
}

int nibble(const std::vector<int32_t>& packed, int64_t cols, int64_t r, int64_t o) {
  const uint32_t word = static_cast<uint32_t>(packed[r * (cols / 8) + o / 8]);
  return (word >> (4 * kUnpack[o % 8])) & 0xF;
}

struct Problem {
  int64_t in, out;
  int group;
  std::vector<__half> x, scales;
  std::vector<int32_t> qweight, qzeros;
  std::vector<double> ref;  // y in double
};

Problem make_problem(int64_t in, int64_t out, int group, std::mt19937& rng) {
  Problem p{in, out, group, {}, {}, {}, {}, {}};
  std::normal_distribution<float> xd(0.0f, 1.0f);
  std::uniform_real_distribution<float> sd(0.002f, 0.02f);
  std::uniform_int_distribution<int> qd(0, 15);
  p.x.resize(in);
  for (auto& v : p.x) v = __float2half(xd(rng));
  std::vector<uint8_t> q(in * out), z((in / group) * out);
  for (auto& v : q) v = static_cast<uint8_t>(qd(rng));
  for (auto& v : z) v = static_cast<uint8_t>(qd(rng));
  p.scales.resize((in / group) * out);
  for (auto& v : p.scales) v = __float2half(sd(rng));
  p.qweight = pack_awq(q, in, out);
  p.qzeros = pack_awq(z, in / group, out);
  // Reference: y[o] = Σ_i x[i]·(q[i][o] − z[g][o])·s[g][o], read back through the unpacking table.
  p.ref.assign(out, 0.0);
  for (int64_t i = 0; i < in; ++i) {
    const double xi = __half2float(p.x[i]);
    const int64_t g = i / group;
    for (int64_t o = 0; o < out; ++o) {
      const int qv = nibble(p.qweight, out, i, o), zv = nibble(p.qzeros, out, g, o);
      p.ref[o] += xi * (qv - zv) * double(__half2float(p.scales[g * out + o]));
    }
  }
  return p;
}

struct Device {
  DeviceBuffer x, qweight, qzeros, scales, y, workspace;
};

Device to_device(const Problem& p) {
  Device d{test::upload(p.x), test::upload(p.qweight), test::upload(p.qzeros), test::upload(p.scales),
           DeviceBuffer(0, p.out * 4), DeviceBuffer(0, mixq::cuda::gemv_w4a16_workspace_bytes(p.out))};
  mixq::cuda::DeviceGuard guard(0);
  CUDA_CHECK(cudaMemset(d.workspace.data(), 0, d.workspace.size()));  // once: the kernel leaves it zeroed
  return d;
}

std::vector<double> run(const Problem& p, Device& d, DType y_dtype, const GemvW4A16Config* cfg) {
  test::poison(d.y);
  mixq::cuda::gemv_w4a16(d.x.as<__half>(), d.qweight.as<int32_t>(), d.qzeros.as<int32_t>(), d.scales.as<__half>(),
                         d.y.data(), y_dtype, p.in, p.out, p.group, d.workspace.data(), d.workspace.size(), 0, cfg);
  std::vector<double> y(p.out);
  if (y_dtype == DType::F32) {
    const auto v = test::download<float>(d.y, p.out);
    for (int64_t o = 0; o < p.out; ++o) y[o] = v[o];
  } else {
    const auto v = test::download<__half>(d.y, p.out);
    for (int64_t o = 0; o < p.out; ++o) y[o] = __half2float(v[o]);
  }
  return y;
}

}  // namespace

int main() {
  test::skip_without_gpu();
  std::mt19937 rng(7);
  // Tolerance: products x·(q−z) and 4-row partial sums are fp16 (relative rounding 2^-11 each), scaled in fp16,
  // summed in fp32: expected errors ~3e-4 (printed per case); the bound leaves room, yet stays far below what a wrong nibble,
  // group or scale gives (≥ 1e-1).
  const double tol_f32 = 2e-3, tol_f16 = 2.5e-3;

  struct Shape { int64_t in, out; int group; const char* what; };
  const Shape shapes[] = {
      {4096, 14336, 128, "Mixtral w1/w3"},
      {14336, 4096, 128, "Mixtral w2"},
      {4096, 1024, 128, "Mixtral k/v proj"},
      {4096, 4096, 64, "q/o proj, g64"},
      {256, 512, 128, "tiny w1/w3"},
      {512, 256, 128, "tiny w2"},
      {256, 256, 32, "tiny q, g32"},
      {128, 32, 32, "one column tile"},
      {1024, 96, 32, "out not a multiple of the tile"},
  };
  for (const Shape& s : shapes) {
    const Problem p = make_problem(s.in, s.out, s.group, rng);
    Device d = to_device(p);
    for (DType yt : {DType::F32, DType::F16}) {
      const double err = test::rel_err(run(p, d, yt, nullptr), p.ref);
      const double tol = yt == DType::F32 ? tol_f32 : tol_f16;
      const auto cfg = mixq::cuda::gemv_w4a16_default_config(s.in, s.out, s.group, 0);
      std::printf("  %-32s in=%-6lld out=%-6lld g=%-3d y=%s default W=%d C=%d R=%d split=%d: rel err %.3g\n", s.what,
                  (long long)s.in, (long long)s.out, s.group, yt == DType::F32 ? "f32" : "f16", cfg.words_per_thread, cfg.cols_per_block,
                  cfg.rows_per_run, cfg.split_k, err);
      EXPECT(err <= tol, "%s y=%s: rel err %g > %g", s.what, yt == DType::F32 ? "f32" : "f16", err, tol);
    }
  }

  // Every kernel variant and split on shapes where tiles and splits are uneven.
  {
    const Shape variants_on[] = {{14336, 4096, 128, "w2"}, {1024, 96, 32, "narrow"}, {512, 256, 64, "small"}};
    for (const Shape& s : variants_on) {
      const Problem p = make_problem(s.in, s.out, s.group, rng);
      Device d = to_device(p);
      double worst = 0;
      for (int W : {2, 4})
        for (int C : {2, 4, 8})
          for (int R : {16, 32})
            for (int split : {1, 3, 7, 64}) {
              if (W == 2 && R != 16) continue;
              const GemvW4A16Config cfg{C, R, split, W};
              const double err = test::rel_err(run(p, d, DType::F32, &cfg), p.ref);
              worst = std::max(worst, err);
              EXPECT(err <= tol_f32, "%s W=%d C=%d R=%d split=%d: rel err %g", s.what, W, C, R, split, err);
            }
      std::printf("  variants on %s (W 2/4 × C 2/4/8 × R 16/32 × split 1/3/7/64): worst rel err %.3g\n", s.what,
                  worst);
    }
  }

  // x given as f32 (the decode linear's launch_gemv_w4a16_f32x): rounded to f16 in registers, so the result is
  // bitwise the f16 path's on the host-rounded x — for f32 values that f16 cannot hold exactly.
  {
    const Shape f32x_on[] = {{4096, 14336, 128, "w1"}, {14336, 4096, 128, "w2"}, {4096, 1024, 128, "k/v"},
                             {1024, 96, 32, "narrow"}};
    for (const Shape& s : f32x_on) {
      Problem p = make_problem(s.in, s.out, s.group, rng);
      std::vector<float> xf(size_t(s.in));
      for (int64_t i = 0; i < s.in; ++i) {
        xf[size_t(i)] = __half2float(p.x[size_t(i)]) * 1.0003f + 1e-4f;  // between f16 values
        p.x[size_t(i)] = __float2half_rn(xf[size_t(i)]);
      }
      Device d = to_device(p);
      const auto want = run(p, d, DType::F32, nullptr);
      DeviceBuffer x32 = test::upload(xf);
      test::poison(d.y);
      const auto cfg = mixq::cuda::gemv_w4a16_default_config(s.in, s.out, s.group, 0);
      mixq::cuda::launch_gemv_w4a16_f32x(x32.as<float>(), d.qweight.as<int32_t>(), d.qzeros.as<int32_t>(),
                                         d.scales.as<__half>(), d.y.as<float>(), s.in, s.out, s.group,
                                         d.workspace.data(), cfg, 0);
      const auto got = test::download<float>(d.y, s.out);
      bool same = true;
      for (int64_t o = 0; o < s.out; ++o) same &= double(got[size_t(o)]) == want[size_t(o)];
      EXPECT(same, "%s: x as f32 differs from the f16 path on the rounded x", s.what);
    }
    std::printf("  x as f32 (rounded in registers): bitwise the f16 path's result on 4 shapes\n");
  }

  // Determinism and workspace reuse: split-K with the last-block reduction, many calls on one workspace.
  {
    const Problem p = make_problem(14336, 4096, 128, rng);
    Device d = to_device(p);
    const GemvW4A16Config cfg{4, 16, 16};
    const auto first = run(p, d, DType::F32, &cfg);
    EXPECT(test::rel_err(first, p.ref) <= tol_f32, "determinism case: wrong result");
    for (int i = 0; i < 20; ++i) {
      const auto again = run(p, d, DType::F32, &cfg);
      EXPECT(again == first, "call %d: result differs bitwise from call 0", i + 1);
    }
    std::printf("  determinism: 21 calls (split 16, one workspace) bitwise identical\n");
  }

  // Batched: several problems of one shape in one launch (the MoE decode step's w1/w3 of two experts), each
  // with its own x, weights and y, against its own reference; default and forced split-K configs.
  {
    const int count = 4;
    std::vector<Problem> ps;
    std::vector<Device> ds;
    for (int i = 0; i < count; ++i) {
      ps.push_back(make_problem(1024, 2048, 128, rng));
      ds.push_back(to_device(ps.back()));
    }
    DeviceBuffer ws(0, mixq::cuda::gemv_w4a16_workspace_bytes(2048, count));
    CUDA_CHECK(cudaMemset(ws.data(), 0, ws.size()));
    std::vector<mixq::cuda::GemvW4A16Problem> probs;
    for (auto& d : ds) {
      test::poison(d.y);
      probs.push_back({d.x.as<__half>(), d.qweight.as<int32_t>(), d.qzeros.as<int32_t>(), d.scales.as<__half>(), d.y.data()});
    }
    const GemvW4A16Config split_cfg{8, 16, 5, 2};
    for (const GemvW4A16Config* cfg : {static_cast<const GemvW4A16Config*>(nullptr), &split_cfg}) {
      for (auto& d : ds) test::poison(d.y);
      mixq::cuda::gemv_w4a16_batched(probs.data(), count, DType::F32, 1024, 2048, 128, ws.data(), ws.size(), 0, cfg);
      for (int i = 0; i < count; ++i) {
        const auto v = test::download<float>(ds[i].y, 2048);
        const double err = test::rel_err(std::vector<double>(v.begin(), v.end()), ps[i].ref);
        EXPECT(err <= tol_f32, "batched problem %d (%s): rel err %g", i, cfg ? "split 5" : "default", err);
      }
    }
    std::printf("  batched: 4 problems per launch, default and split-K configs, each matches its reference\n");
    std::vector<__half> host_x(1024);
    auto bad = probs;
    bad[1].x = host_x.data();
    test::expect_error("batched host x in problem 1",
                       [&] { mixq::cuda::gemv_w4a16_batched(bad.data(), count, DType::F32, 1024, 2048, 128, ws.data(), ws.size(), 0); },
                       {"problem 1", "'x'", "host memory"});
    test::expect_error("batch of 9",
                       [&] { mixq::cuda::gemv_w4a16_batched(probs.data(), 9, DType::F32, 1024, 2048, 128, ws.data(), ws.size(), 0); },
                       {"batch of 9"});
    test::expect_error("batched workspace too small",
                       [&] {
                         mixq::cuda::gemv_w4a16_batched(probs.data(), count, DType::F32, 1024, 2048, 128, ws.data(),
                                                        mixq::cuda::gemv_w4a16_workspace_bytes(2048, 1), 0);
                       },
                       {"workspace"});
  }

  // Bad arguments: clear errors, nothing launched.
  {
    const Problem p = make_problem(256, 64, 32, rng);
    Device d = to_device(p);
    auto call = [&](const void* x, int64_t in, int64_t out, int group, size_t ws) {
      mixq::cuda::gemv_w4a16(static_cast<const __half*>(x), d.qweight.as<int32_t>(), d.qzeros.as<int32_t>(),
                             d.scales.as<__half>(), d.y.data(), DType::F32, in, out, group, d.workspace.data(), ws, 0);
    };
    const size_t ws = d.workspace.size();
    test::expect_error("group 100", [&] { call(d.x.data(), 256, 64, 100, ws); }, {"gemv_w4a16", "group size"});
    test::expect_error("out % 32", [&] { call(d.x.data(), 256, 48, 32, ws); }, {"out % 32"});
    test::expect_error("misaligned x", [&] { call(d.x.as<char>() + 2, 256, 64, 32, ws); }, {"'x'", "aligned"});
    test::expect_error("small workspace", [&] { call(d.x.data(), 256, 64, 32, 16); }, {"workspace"});
    std::vector<__half> host_x(256);
    test::expect_error("host x", [&] { call(host_x.data(), 256, 64, 32, ws); }, {"gemv_w4a16", "'x'", "host memory"});
  }
  return test::finish("test_cuda_gemv_w4a16");
}
