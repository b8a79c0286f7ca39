// int4 W4A16 kernels (AVX-512, AVX2, scalar — whichever this CPU runs) against the oracle
// "dequantize everything, then a plain f32 matmul", over a table of shapes × group sizes × token counts.
// Tolerance: ‖y − y_ref‖ / ‖y_ref‖ ≤ 1e-5 for GEMV (n = 1) and GEMM (n > 1) alike — both accumulate in f32,
// only the summation order differs. Shapes cover: column tails (out % 128 ≠ 0), an odd number of 128-column
// tiles, one group spanning all rows, and in ≥ 2048 (the AVX-512 GEMV splits the rows into several K-chunks).
// The AVX-512 GEMV reads nibbles as denormal-range floats against x pre-scaled by 2^K, so it is also checked on
// activations from 2^-100 to 2^100 (exactly proportional results), mixed magnitudes, zeros, and with the
// caller's MXCSR set to flush denormals (DAZ/FTZ), which the kernel must override and restore.
// Plus: determinism, thread-count independence, and the Linear wrapper.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "awq/awq_pack.h"
#include "awq/w4a16_cpu.h"
#include "linear_awq.h"
#include "tensor.h"
#include "test_util.h"
#include "thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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
  // Fixture shapes (hidden 256, inter 512, kv 128), column tails (200, 136, 264), 11 tiles (1408), and in ≥ 2048
  // (2, 3 and 4 K-chunks in the AVX-512 GEMV).
  const Shape shapes[] = {{256, 256}, {256, 128}, {256, 512}, {512, 256}, {256, 200}, {384, 136},
                          {1024, 1408}, {2048, 384}, {3072, 264}, {4096, 136}};
  const int64_t groups[] = {32, 64, 128, 0};  // 0: one group over all rows (group_size -1)
  const int64_t tokens[] = {1, 2, 3, 4, 5, 8, 33};
  const double tol = 1e-5;
  // Every kernel this CPU runs; the SIMD GEMVs with both nibble routes (Denormal is correct everywhere, only slow
  // where FMA takes denormal operands through microcode assists).
  struct Kernel {
    W4Isa isa;
    W4Nibble nibble;
    std::string name;
  };
  std::vector<Kernel> kernels;
  for (W4Isa isa : w4_available_isas()) {
    if (isa == W4Isa::Scalar) {
      kernels.push_back({isa, W4Nibble::Auto, "scalar"});
      continue;
    }
    for (W4Nibble nib : {W4Nibble::Convert, W4Nibble::Denormal})
      kernels.push_back({isa, nib, std::string(w4_isa_name(isa)) + "/" + w4_nibble_name(nib)});
  }
  std::string names;
  for (const Kernel& k : kernels) names += k.name + " ";
  check(true, "kernels on this CPU: " + names + "(auto = " + w4_isa_name(w4_best_isa()) + "/" +
                  w4_nibble_name(w4_nibble_route()) + "; denormal FMA operands at full speed: " +
                  (w4_denormal_fma_fast() ? "yes" : "no") + ")");

  for (const Shape& s : shapes) {
    for (int64_t g0 : groups) {
      const int64_t g = g0 == 0 ? s.in : g0;
      if (s.in % g) continue;
      if (g0 == 0 && s.in > 1024) continue;  // one long group: the small shapes are enough
      const Packed p = random_packed(s.in, s.out, g, rng);
      const W4A16Weights w = p.view();
      for (int64_t n : tokens) {
        if (s.in >= 2048 && n > 5 && n != 8) continue;  // keeps the big shapes' reference cheap
        std::vector<float> x(size_t(n * s.in)), ref(size_t(n * s.out)), y(size_t(n * s.out));
        for (float& v : x) v = ux(rng);
        w4a16_reference(w, x.data(), n, ref.data());
        for (const Kernel& k : kernels) {
          // The SIMD kernels take n ≤ 8 through the K-chunked GEMV, more through the tiled GEMM (where the nibble
          // route does not apply); the scalar kernel is a GEMV per token.
          const bool gemv = n <= 8 || k.isa == W4Isa::Scalar;
          if (!gemv && k.nibble == W4Nibble::Denormal) continue;
          std::fill(y.begin(), y.end(), 1e30f);  // every output must be written
          w4a16_forward(w, x.data(), n, y.data(), pool, k.isa, k.nibble);
          const double err = rel_err(y.data(), ref.data(), y.size());
          check(err <= tol, std::string(gemv ? "GEMV " : "GEMM ") + k.name + " in " + std::to_string(s.in) +
                                " out " + std::to_string(s.out) + " g" + std::to_string(g) + " n" + std::to_string(n) +
                                ": rel err " + fmt(err));
        }
      }
    }
  }

  // Activation range (GEMV, 4 K-chunks, a column tail). Scaling x by 2^m scales every output by exactly 2^m (the
  // kernels' arithmetic is scale-free while nothing under- or overflows), so the outputs at 2^±20 and 2^±100 must
  // equal the unit-scale outputs times 2^m bit for bit; non-power-of-two scales and mixed magnitudes are compared
  // with the oracle.
  {
    const Packed p = random_packed(4096, 392, 128, rng);
    const W4A16Weights w = p.view();
    std::vector<float> x1(4096), x(4096), y1(392), y(392), ref(392);
    for (float& v : x1) v = ux(rng);
    for (const Kernel& k : kernels) {
      w4a16_forward(w, x1.data(), 1, y1.data(), pool, k.isa, k.nibble);
      for (int m : {-100, -20, 20, 100}) {
        for (size_t i = 0; i < x.size(); ++i) x[i] = std::ldexp(x1[i], m);
        w4a16_forward(w, x.data(), 1, y.data(), pool, k.isa, k.nibble);
        bool exact = true;
        for (size_t o = 0; o < y.size(); ++o) exact &= y[o] == std::ldexp(y1[o], m);
        check(exact, std::string("GEMV ") + k.name + ": x · 2^" + std::to_string(m) + " gives y · 2^" +
                         std::to_string(m) + " exactly");
      }
      for (float c : {1e-7f, 3e-3f, 7e5f, 2e9f}) {
        for (size_t i = 0; i < x.size(); ++i) x[i] = x1[i] * c;
        w4a16_reference(w, x.data(), 1, ref.data());
        w4a16_forward(w, x.data(), 1, y.data(), pool, k.isa, k.nibble);
        const double err = rel_err(y.data(), ref.data(), y.size());
        check(err <= tol, std::string("GEMV ") + k.name + ": x · " + fmt(c) + ": rel err " + fmt(err));
      }
      // Mixed magnitudes: an outlier channel every 97 rows (as LLM activations have), the rest small, some zeros.
      for (size_t i = 0; i < x.size(); ++i) x[i] = i % 97 == 5 ? 3e3f * x1[i] : i % 13 == 0 ? 0.0f : 1e-3f * x1[i];
      w4a16_reference(w, x.data(), 1, ref.data());
      w4a16_forward(w, x.data(), 1, y.data(), pool, k.isa, k.nibble);
      const double err = rel_err(y.data(), ref.data(), y.size());
      check(err <= tol, std::string("GEMV ") + k.name + ": outlier channels 3e3 among 1e-3: rel err " + fmt(err));
      std::fill(x.begin(), x.end(), 0.0f);
      std::fill(y.begin(), y.end(), 1.0f);
      w4a16_forward(w, x.data(), 1, y.data(), pool, k.isa, k.nibble);
      bool zero = true;
      for (float v : y) zero &= v == 0.0f;
      check(zero, std::string("GEMV ") + k.name + ": x = 0 gives y = 0");
    }
#if defined(__x86_64__)
    // The caller flushes denormals (DAZ | FTZ, as -ffast-math startup code sets): same bits as without, and the
    // caller's MXCSR is left as it was. A 1-thread pool runs the kernel on this thread.
    const unsigned csr = _mm_getcsr();
    for (const Kernel& k : kernels) {
      w4a16_forward(w, x1.data(), 1, y1.data(), pool1, k.isa, k.nibble);
      _mm_setcsr(csr | 0x8040u);
      w4a16_forward(w, x1.data(), 1, y.data(), pool1, k.isa, k.nibble);
      const unsigned after = _mm_getcsr();
      _mm_setcsr(csr);
      check(std::memcmp(y.data(), y1.data(), y.size() * 4) == 0 && after == (csr | 0x8040u),
            std::string("GEMV ") + k.name + ": identical under the caller's DAZ/FTZ, MXCSR restored");
    }
#endif
  }

  // n = 0 writes nothing (and reads nothing).
  {
    const Packed p = random_packed(256, 256, 64, rng);
    for (const Kernel& k : kernels) {
      float y = 7.0f;
      w4a16_forward(p.view(), nullptr, 0, &y, pool, k.isa, k.nibble);
      check(y == 7.0f, "n = 0 is a no-op: " + k.name);
    }
  }

  // Several tokens through the GEMV (n ≤ 8) give each token the same bits as that token alone: the tokens share
  // the pass over W, not their sums (2 K-chunks, a column tail, both routes).
  {
    const Packed p = random_packed(2048, 264, 64, rng);
    for (const Kernel& k : kernels) {
      if (k.isa == W4Isa::Scalar) continue;
      for (int64_t n : {int64_t(2), int64_t(3), int64_t(4), int64_t(5), int64_t(8)}) {
        std::vector<float> x(size_t(n * 2048)), y(size_t(n * 264)), y1(264);
        for (size_t i = 0; i < x.size(); ++i) x[i] = ux(rng) * (i % 2048 == 9 ? 50.0f : 1.0f);
        w4a16_forward(p.view(), x.data(), n, y.data(), pool, k.isa, k.nibble);
        bool same = true;
        for (int64_t t = 0; t < n; ++t) {
          w4a16_forward(p.view(), x.data() + t * 2048, 1, y1.data(), pool, k.isa, k.nibble);
          same &= std::memcmp(y1.data(), y.data() + t * 264, 264 * 4) == 0;
        }
        check(same, "GEMV " + k.name + " n" + std::to_string(n) + ": every token's output equals its n = 1 output bit for bit");
      }
    }
  }

  // Determinism: the same call twice, and 1 vs 2 vs 3 threads, give identical bits (no split-dependent reductions).
  // in 4096: 4 K-chunks, one column block whatever the pool; in 512: one K-chunk, split into column blocks by the
  // pool size.
  {
    ThreadPool pool3(3);
    for (int64_t in : {int64_t(4096), int64_t(512)}) {
      const Packed p = random_packed(in, 1408, 128, rng);
      for (int64_t n : {int64_t(1), int64_t(5), int64_t(37)}) {
        std::vector<float> x(size_t(n * in)), a(size_t(n * 1408)), b(a.size()), c(a.size()), d(a.size());
        for (float& v : x) v = ux(rng);
        for (const Kernel& k : kernels) {
          w4a16_forward(p.view(), x.data(), n, a.data(), pool, k.isa, k.nibble);
          w4a16_forward(p.view(), x.data(), n, b.data(), pool, k.isa, k.nibble);
          w4a16_forward(p.view(), x.data(), n, c.data(), pool1, k.isa, k.nibble);
          w4a16_forward(p.view(), x.data(), n, d.data(), pool3, k.isa, k.nibble);
          check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0 && std::memcmp(a.data(), c.data(), a.size() * 4) == 0 &&
                    std::memcmp(a.data(), d.data(), a.size() * 4) == 0,
                std::string("deterministic across runs and 1/2/3 threads: ") + k.name + " in " + std::to_string(in) +
                    " n" + std::to_string(n));
        }
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
