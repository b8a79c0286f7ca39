// gemm_w4a16 (the tensor-core int4 GEMM of prefill) on the GPU against a float64 CPU reference of the AutoAWQ
// GEMM format: dense over Mixtral-8x7B shapes and odd token counts (9, 17, 513, 2048) at group sizes 32/64/128;
// the grouped MoE pair (gate_up → h, down → slots) through moe_align_block_size for 8 experts top-2 and 128
// experts top-8, every expert held and only the even ones (the others' slots must stay untouched). Outputs are
// poisoned (NaN) before every run, so an element the kernel forgets shows up. The packing follows the documented
// table (slot i of word c holds column 8c + ORDER[i]); the reference unpacks with the inverse table.
//   test_cuda_gemm_w4a16 [--small]   --small: only the small shapes (for compute-sanitizer, ~100× slower).
#include <algorithm>
#include <cstdint>

#include "expert_table.h"
#include "gemm_w4a16.h"
#include "moe_align_block_size.h"
#include "test_cuda_util.h"

using mixq::cuda::DeviceBuffer;
using mixq::cuda::ExpertMatrices;

namespace {

bool g_small = false;  // --small

constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};   // slot → column offset (packing)
constexpr int kUnpack[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column offset → slot (unpacking)
// Tolerance: x is fp16 in both; the kernel rounds each dequantized weight (q − z)·s to fp16 (2^-11 relative) and
// sums in f32, so errors sit near 3e-4; a wrong nibble, group, scale or row gives ≥ 1e-1. The MoE also rounds h.
constexpr double kTol = 2e-3;

std::vector<int32_t> pack_awq(const std::vector<uint8_t>& q, int64_t rows, int64_t cols) {
  std::vector<int32_t> out(static_cast<size_t>(rows * cols / 8), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols / 8; ++c) {
      uint32_t word = 0;
      for (int slot = 0; slot < 8; ++slot) word |= uint32_t(q[size_t(r * cols + 8 * c + kOrder[slot])]) << (4 * slot);
      out[size_t(r * (cols / 8) + c)] = static_cast<int32_t>(word);
    }
  return out;
}

// An AWQ matrix [in → out] on the host (random codes, zeros, scales) and on the device.
struct Matrix {
  int64_t in = 0, out = 0;
  int group = 0;
  std::vector<int32_t> qweight, qzeros;
  std::vector<__half> scales;
  DeviceBuffer d_qweight, d_qzeros, d_scales;

  // W[i][o] as float (exact: (q − z)·s in double rounded to float is what the reference multiplies with).
  std::vector<float> dequantized() const {
    std::vector<float> w(static_cast<size_t>(in * out));
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o) {
        const int64_t g = i / group;
        const uint32_t qw = uint32_t(qweight[size_t(i * (out / 8) + o / 8)]);
        const uint32_t zw = uint32_t(qzeros[size_t(g * (out / 8) + o / 8)]);
        const int q = (qw >> (4 * kUnpack[o % 8])) & 0xF, z = (zw >> (4 * kUnpack[o % 8])) & 0xF;
        w[size_t(i * out + o)] = float((q - z) * double(__half2float(scales[size_t(g * out + o)])));
      }
    return w;
  }
  mixq::cuda::AwqMatrix device() const {
    return {d_qweight.as<int32_t>(), d_qzeros.as<int32_t>(), d_scales.as<__half>()};
  }
};

Matrix make_matrix(int64_t in, int64_t out, int group, std::mt19937& rng) {
  Matrix m;
  m.in = in;
  m.out = out;
  m.group = group;
  std::uniform_int_distribution<int> qd(0, 15);
  std::uniform_real_distribution<float> sd(0.002f, 0.02f);
  std::vector<uint8_t> q(static_cast<size_t>(in * out)), z(static_cast<size_t>(in / group * out));
  for (auto& v : q) v = uint8_t(qd(rng));
  for (auto& v : z) v = uint8_t(qd(rng));
  m.qweight = pack_awq(q, in, out);
  m.qzeros = pack_awq(z, in / group, out);
  m.scales.resize(static_cast<size_t>(in / group * out));
  for (auto& v : m.scales) v = __float2half(sd(rng));
  m.d_qweight = test::upload(m.qweight);
  m.d_qzeros = test::upload(m.qzeros);
  m.d_scales = test::upload(m.scales);
  return m;
}

std::vector<__half> random_half(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<__half> v(n);
  for (auto& x : v) x = __float2half(d(rng));
  return v;
}

// Rows the reference checks: all of a small n; else the tile edges, the last row and a random sample.
std::vector<int64_t> rows_to_check(int64_t n, std::mt19937& rng) {
  std::vector<int64_t> rows;
  if (n <= 80) {
    for (int64_t r = 0; r < n; ++r) rows.push_back(r);
    return rows;
  }
  for (int64_t r : {int64_t{0}, int64_t{1}, int64_t{63}, int64_t{64}, int64_t{127}, int64_t{128}, n - 2, n - 1})
    if (r < n) rows.push_back(r);
  for (int i = 0; i < 16; ++i) rows.push_back(int64_t(rng() % uint64_t(n)));
  return rows;
}

void test_dense(std::mt19937& rng) {
  struct Case { int64_t in, out, n; int group; const char* what; };
  const Case cases[] = {
      {4096, 14336, 2048, 128, "Mixtral w1/w3"},   {4096, 14336, 513, 128, "Mixtral w1/w3"},
      {14336, 4096, 2048, 128, "Mixtral w2"},      {14336, 4096, 17, 128, "Mixtral w2"},
      {4096, 4096, 513, 64, "o_proj g64"},         {4096, 1024, 2048, 32, "k/v_proj g32"},
      {4096, 1024, 9, 128, "k/v_proj"},            {256, 192, 17, 32, "partial column tile g32"},
      {512, 96, 513, 64, "narrow g64"},            {256, 64, 33, 256, "one group (G = in)"},
      {1024, 4096, 4096, 128, "4096 tokens"},
  };
  for (const Case& c : cases) {
    if (g_small && c.in * c.out > (int64_t{1} << 20)) continue;
    const Matrix w = make_matrix(c.in, c.out, c.group, rng);
    const std::vector<__half> x = random_half(size_t(c.n * c.in), rng);
    DeviceBuffer dx = test::upload(x), dy(0, size_t(c.n * c.out) * 4);
    test::poison(dy);
    mixq::cuda::gemm_w4a16(dx.as<__half>(), w.d_qweight.as<int32_t>(), w.d_qzeros.as<int32_t>(),
                           w.d_scales.as<__half>(), dy.as<float>(), c.n, c.in, c.out, c.group, 0);
    const std::vector<float> y = test::download<float>(dy, size_t(c.n * c.out));
    const bool all_finite = std::all_of(y.begin(), y.end(), [](float v) { return std::isfinite(v); });
    const std::vector<float> wf = w.dequantized();
    std::vector<double> got, ref;
    const std::vector<int64_t> rows = rows_to_check(c.n, rng);
    for (int64_t r : rows) {
      std::vector<double> acc(static_cast<size_t>(c.out), 0.0);
      for (int64_t i = 0; i < c.in; ++i) {
        const double xi = __half2float(x[size_t(r * c.in + i)]);
        const float* wr = &wf[size_t(i * c.out)];
        for (int64_t o = 0; o < c.out; ++o) acc[size_t(o)] += xi * wr[o];
      }
      for (int64_t o = 0; o < c.out; ++o) {
        got.push_back(y[size_t(r * c.out + o)]);
        ref.push_back(acc[size_t(o)]);
      }
    }
    const double err = test::rel_err(got, ref);
    std::printf("  dense %-24s in=%-6lld out=%-6lld n=%-5lld g=%-3d tile=%d: rel err %.3g over %zu rows%s\n", c.what,
                (long long)c.in, (long long)c.out, (long long)c.n, c.group,
                mixq::cuda::gemm_w4a16_row_tile(c.n, c.out, 0), err, rows.size(),
                all_finite ? ", every output written" : "");
    EXPECT(all_finite, "%s n=%lld: outputs left unwritten (NaN poison) or not finite", c.what, (long long)c.n);
    EXPECT(err <= kTol, "%s in=%lld out=%lld n=%lld g=%d: rel err %g", c.what, (long long)c.in, (long long)c.out,
           (long long)c.n, c.group, err);
  }
}

void test_dense_errors(std::mt19937& rng) {
  const Matrix w = make_matrix(256, 64, 32, rng);
  DeviceBuffer dx = test::upload(random_half(9 * 256, rng)), dy(0, 9 * 64 * 4);
  const auto call = [&](int64_t in, int64_t out, int group, const void* x) {
    mixq::cuda::gemm_w4a16(static_cast<const __half*>(x), w.d_qweight.as<int32_t>(), w.d_qzeros.as<int32_t>(),
                           w.d_scales.as<__half>(), dy.as<float>(), 9, in, out, group, 0);
  };
  test::expect_error("out % 32 != 0", [&] { call(256, 48, 32, dx.data()); }, {"gemm_w4a16", "out=48"});
  test::expect_error("group 48", [&] { call(256, 64, 48, dx.data()); }, {"gemm_w4a16", "group"});
  std::vector<__half> host(9 * 256);
  test::expect_error("x in host memory", [&] { call(256, 64, 32, host.data()); }, {"gemm_w4a16", "x"});
}

// One grouped MoE problem: experts' w1/w3 [hidden → inter] and w2 [inter → hidden], a routing, and the reference.
void test_moe_case(int E, int top_k, int64_t hidden, int64_t inter, int group, int64_t tokens, int block_rows,
                   std::mt19937& rng) {
  if (g_small && hidden * inter > (int64_t{1} << 18)) return;
  std::vector<Matrix> w1, w3, w2;
  for (int e = 0; e < E; ++e) {
    w1.push_back(make_matrix(hidden, inter, group, rng));
    w3.push_back(make_matrix(hidden, inter, group, rng));
    w2.push_back(make_matrix(inter, hidden, group, rng));
  }
  // Routing: top_k distinct experts per token, weights in (0, 1).
  const int64_t numel = tokens * top_k;
  std::vector<int32_t> ids(static_cast<size_t>(numel));
  std::vector<float> weights(static_cast<size_t>(numel));
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int32_t> all(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) all[size_t(e)] = e;
    std::shuffle(all.begin(), all.end(), rng);
    for (int j = 0; j < top_k; ++j) {
      ids[size_t(t * top_k + j)] = all[size_t(j)];
      weights[size_t(t * top_k + j)] = wd(rng);
    }
  }
  const std::vector<__half> x = random_half(static_cast<size_t>(tokens * hidden), rng);
  const int64_t capacity = mixq::cuda::moe_align_capacity(numel, E, block_rows);
  const int64_t blocks = mixq::cuda::moe_align_max_blocks(numel, E, block_rows);
  DeviceBuffer d_ids = test::upload(ids), d_w = test::upload(weights), d_x = test::upload(x);
  DeviceBuffer sorted(0, size_t(capacity) * 4), eids(0, size_t(blocks) * 4), post(0, 4);
  DeviceBuffer h(0, size_t(capacity * inter) * 2), slots(0, size_t(numel * hidden) * 4);
  mixq::cuda::moe_align_block_size(d_ids.as<int32_t>(), numel, E, block_rows, sorted.as<int32_t>(),
                                   eids.as<int32_t>(), post.as<int32_t>(), 0);
  mixq::cuda::MoeRoutes routes;
  routes.sorted_token_ids = sorted.as<int32_t>();
  routes.expert_ids = eids.as<int32_t>();
  routes.num_tokens_post_pad = post.as<int32_t>();
  routes.numel = numel;
  routes.top_k = top_k;
  routes.num_experts = E;
  routes.block_rows = block_rows;

  // Reference slots (float64) of every slot; sampled slots only for large problems.
  std::vector<std::vector<float>> f1(static_cast<size_t>(E)), f3(static_cast<size_t>(E)), f2(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) {
    f1[size_t(e)] = w1[size_t(e)].dequantized();
    f3[size_t(e)] = w3[size_t(e)].dequantized();
    f2[size_t(e)] = w2[size_t(e)].dequantized();
  }
  std::vector<int64_t> check_slots;
  if (numel * hidden * inter <= (int64_t{1} << 31)) {
    for (int64_t s = 0; s < numel; ++s) check_slots.push_back(s);
  } else {
    for (int i = 0; i < 64; ++i) check_slots.push_back(int64_t(rng() % uint64_t(numel)));
    check_slots.push_back(numel - 1);
  }
  std::vector<std::vector<double>> ref(static_cast<size_t>(numel));
  for (int64_t s : check_slots) {
    if (!ref[size_t(s)].empty()) continue;
    const int e = ids[size_t(s)];
    const int64_t t = s / top_k;
    std::vector<double> g(static_cast<size_t>(inter), 0.0), u(static_cast<size_t>(inter), 0.0), y(static_cast<size_t>(hidden), 0.0);
    for (int64_t i = 0; i < hidden; ++i) {
      const double xi = __half2float(x[size_t(t * hidden + i)]);
      for (int64_t o = 0; o < inter; ++o) {
        g[size_t(o)] += xi * f1[size_t(e)][size_t(i * inter + o)];
        u[size_t(o)] += xi * f3[size_t(e)][size_t(i * inter + o)];
      }
    }
    for (int64_t o = 0; o < inter; ++o) {
      const double hv = g[size_t(o)] / (1.0 + std::exp(-g[size_t(o)])) * u[size_t(o)];
      for (int64_t j = 0; j < hidden; ++j) y[size_t(j)] += hv * f2[size_t(e)][size_t(o * hidden + j)];
    }
    for (auto& v : y) v *= weights[size_t(s)];
    ref[size_t(s)] = std::move(y);
  }

  for (const bool only_even : {false, true}) {
    std::vector<ExpertMatrices> table(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e)
      if (!only_even || e % 2 == 0) {
        table[size_t(e)].w[mixq::cuda::kGate] = w1[size_t(e)].device();
        table[size_t(e)].w[mixq::cuda::kUp] = w3[size_t(e)].device();
        table[size_t(e)].w[mixq::cuda::kDown] = w2[size_t(e)].device();
      }
    DeviceBuffer d_table = test::upload(table);
    test::poison(h);
    test::poison(slots);
    mixq::cuda::moe_gemm_w4a16_gate_up(d_x.as<__half>(), routes, d_table.as<ExpertMatrices>(), h.as<__half>(),
                                       hidden, inter, group, 0);
    mixq::cuda::moe_gemm_w4a16_down(h.as<__half>(), routes, d_table.as<ExpertMatrices>(), d_w.as<float>(),
                                    slots.as<float>(), hidden, inter, group, 0);
    const std::vector<float> out = test::download<float>(slots, size_t(numel * hidden));
    bool held_written = true, unheld_untouched = true;
    for (int64_t s = 0; s < numel; ++s) {
      const bool held = !only_even || ids[size_t(s)] % 2 == 0;
      for (int64_t j = 0; j < hidden; ++j) {
        const float v = out[size_t(s * hidden + j)];
        if (held) held_written &= std::isfinite(v);
        else unheld_untouched &= std::isnan(v);
      }
    }
    std::vector<double> got, want;
    for (int64_t s : check_slots) {
      if (only_even && ids[size_t(s)] % 2 != 0) continue;
      for (int64_t j = 0; j < hidden; ++j) {
        got.push_back(out[size_t(s * hidden + j)]);
        want.push_back(ref[size_t(s)][size_t(j)]);
      }
    }
    const double err = test::rel_err(got, want);
    std::printf("  moe %3d experts top-%d hidden=%-5lld inter=%-5lld g=%-3d tokens=%-5lld B=%-3d %s: rel err %.3g "
                "over %zu slots\n",
                E, top_k, (long long)hidden, (long long)inter, group, (long long)tokens, block_rows,
                only_even ? "even experts held" : "all held         ", err, got.size() / size_t(hidden));
    EXPECT(held_written, "moe E=%d tokens=%lld: a held slot left unwritten or not finite", E, (long long)tokens);
    EXPECT(unheld_untouched, "moe E=%d tokens=%lld: a slot of an unheld expert was written", E, (long long)tokens);
    EXPECT(err <= kTol, "moe E=%d top-%d tokens=%lld B=%d %s: rel err %g", E, top_k, (long long)tokens, block_rows,
           only_even ? "even held" : "all held", err);
  }
}

void test_moe(std::mt19937& rng) {
  test_moe_case(8, 2, 256, 512, 128, 17, 64, rng);
  test_moe_case(8, 2, 256, 512, 64, 513, 128, rng);
  test_moe_case(8, 2, 512, 1024, 32, 2048, mixq::cuda::gemm_w4a16_moe_block_rows(4096, 8), rng);
  test_moe_case(8, 2, 1024, 3584, 128, 2048, 128, rng);  // Mixtral's ratio, a quarter of its size
  test_moe_case(128, 8, 128, 256, 32, 9, 64, rng);
  test_moe_case(128, 8, 128, 192, 64, 300, 64, rng);
  test_moe_case(128, 8, 256, 128, 128, 1000, 128, rng);
}

}  // namespace

int main(int argc, char** argv) {
  g_small = argc > 1 && std::strcmp(argv[1], "--small") == 0;
  test::skip_without_gpu();
  std::mt19937 rng(11);
  try {
    test_dense(rng);
    test_dense_errors(rng);
    test_moe(rng);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: unexpected error: %s\n", e.what());
    return 1;
  }
  return test::finish("test_cuda_gemm_w4a16");
}
