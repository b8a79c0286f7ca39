// int4 W4A16 kernels (AVX-512, AVX2, scalar — whichever this CPU runs) against the oracle
// "dequantize everything, then a plain f32 matmul", over a table of shapes × group sizes × token counts.
// Tolerance: ‖y − y_ref‖ / ‖y_ref‖ ≤ 1e-5 for GEMV (n = 1) and GEMM (n > 1) alike — both accumulate in f32,
// only the summation order differs. Plus: determinism, thread-count independence, and the Linear wrapper.
#include <cstring>
#include <random>
#include <vector>

#include "awq/awq_pack.h"
#include "awq/w4a16_cpu.h"
#include "linear_awq.h"
#include "tensor.h"
#include "test_util.h"
#include "thread_pool.h"

using namespace mixq;
using namespace mixq::awq;
using namespace mixq_test;

namespace {

struct Packed {
  int64_t in, out, group;
  std::vector<int32_t> qweight, qzeros;
  std::vector<uint16_t> scales;  // fp16
  std::vector<float> tiled;
  W4A16Weights view() const { return W4A16Weights{in, out, group, qweight.data(), qzeros.data(), tiled.data()}; }
};

Packed random_packed(int64_t in, int64_t out, int64_t group, std::mt19937& rng) {
  Packed p{in, out, group, {}, {}, {}, {}};
  std::vector<uint8_t> q(size_t(in * out)), z(size_t(in / group * out));
  for (auto& v : q) v = uint8_t(rng() & 15);
  for (auto& v : z) v = uint8_t(rng() & 15);
  std::uniform_real_distribution<float> u(0.002f, 0.05f);
  p.scales.resize(z.size());
  for (auto& s : p.scales) s = f32_to_f16(u(rng));
  p.qweight.resize(size_t(in * out / 8));
  p.qzeros.resize(size_t(in / group * out / 8));
  pack_int4(q.data(), in, out, p.qweight.data());
  pack_int4(z.data(), in / group, out, p.qzeros.data());
  p.tiled = make_tiled_scales(p.scales.data(), false, in / group, out);
  return p;
}

}  // namespace

int main() {
  ThreadPool pool(2), pool1(1);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> ux(-1.0f, 1.0f);
  struct Shape { int64_t in, out; };
  // Fixture shapes (hidden 256, inter 512, kv 128), a tail of columns not a multiple of 128, Mixtral-like wide.
  const Shape shapes[] = {{256, 256}, {256, 128}, {256, 512}, {512, 256}, {256, 200}, {384, 136}, {1024, 1408}};
  const int64_t groups[] = {32, 64, 128};
  const int64_t tokens[] = {1, 2, 5, 33};
  const double tol = 1e-5;
  std::string isas;
  for (W4Isa isa : w4_available_isas()) isas += std::string(w4_isa_name(isa)) + " ";
  check(true, "kernels on this CPU: " + isas + "(auto = " + w4_isa_name(w4_best_isa()) + ")");

  for (const Shape& s : shapes) {
    for (int64_t g : groups) {
      if (s.in % g) continue;
      const Packed p = random_packed(s.in, s.out, g, rng);
      const W4A16Weights w = p.view();
      for (int64_t n : tokens) {
        std::vector<float> x(size_t(n * s.in)), ref(size_t(n * s.out)), y(size_t(n * s.out));
        for (float& v : x) v = ux(rng);
        w4a16_reference(w, x.data(), n, ref.data());
        for (W4Isa isa : w4_available_isas()) {
          std::fill(y.begin(), y.end(), 1e30f);  // every output must be written
          w4a16_forward(w, x.data(), n, y.data(), pool, isa);
          const double err = rel_err(y.data(), ref.data(), y.size());
          check(err <= tol, std::string(n == 1 ? "GEMV " : "GEMM ") + w4_isa_name(isa) + " in " + std::to_string(s.in) +
                                " out " + std::to_string(s.out) + " g" + std::to_string(g) + " n" + std::to_string(n) +
                                ": rel err " + fmt(err));
        }
      }
    }
  }

  // Determinism: the same call twice, and 1 vs 2 threads, give identical bits (no split-dependent reductions).
  {
    const Packed p = random_packed(512, 1408, 128, rng);
    for (int64_t n : {int64_t(1), int64_t(37)}) {
      std::vector<float> x(size_t(n * 512)), a(size_t(n * 1408)), b(a.size()), c(a.size());
      for (float& v : x) v = ux(rng);
      for (W4Isa isa : w4_available_isas()) {
        w4a16_forward(p.view(), x.data(), n, a.data(), pool, isa);
        w4a16_forward(p.view(), x.data(), n, b.data(), pool, isa);
        w4a16_forward(p.view(), x.data(), n, c.data(), pool1, isa);
        check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0 && std::memcmp(a.data(), c.data(), a.size() * 4) == 0,
              std::string("deterministic across runs and thread counts: ") + w4_isa_name(isa) + " n" + std::to_string(n));
      }
    }
  }

  // The Linear the engine builds: same results as the kernel, weight_row = column of the dequantized matrix.
  {
    const Packed p = random_packed(256, 384, 64, rng);
    TensorView qw{"m.q_proj.qweight", "synthetic", DType::I32, {256, 48}, p.qweight.data(), p.qweight.size() * 4};
    TensorView qz{"m.q_proj.qzeros", "synthetic", DType::I32, {4, 48}, p.qzeros.data(), p.qzeros.size() * 4};
    TensorView sc{"m.q_proj.scales", "synthetic", DType::F16, {4, 384}, p.scales.data(), p.scales.size() * 2};
    QuantConfig qc;
    qc.enabled = true;
    qc.quant_method = "awq";
    qc.version = "gemm";
    qc.group_size = 64;
    auto lin = make_awq_linear(qw, qz, sc, qc);
    check(lin->in_features == 256 && lin->out_features == 384 && lin->name == "m.q_proj" && lin->kind() == "awq-int4-g64",
          "make_awq_linear: in 256, out 384, name and kind (" + lin->kind() + ")");
    check(lin->weight_bytes() == qw.nbytes + qz.nbytes + sc.nbytes, "weight_bytes = packed bytes, nothing expanded");
    std::vector<float> x(3 * 256), y(3 * 384), ref(3 * 384), w_t(256 * 384), row(256);
    for (float& v : x) v = ux(rng);
    lin->forward(x.data(), 3, y.data(), pool);
    w4a16_reference(p.view(), x.data(), 3, ref.data());
    check(rel_err(y.data(), ref.data(), y.size()) <= tol, "AwqLinear::forward matches the reference");
    w4a16_dequantize(p.view(), w_t.data());
    bool rows_ok = true;
    for (int64_t o = 0; o < 384; o += 7) {
      lin->weight_row(o, row.data());
      for (int64_t i = 0; i < 256; ++i) rows_ok &= row[size_t(i)] == w_t[size_t(i * 384 + o)];
    }
    check(rows_ok, "AwqLinear::weight_row(o) is column o of the dequantized [in, out] matrix");
  }
  return finish();
}
