// W4A16 tensor-core GEMM kernel, launchers and guarded entries (gemm_w4a16.h): dense and grouped (MoE).
//
// One kernel template, three epilogues (Mode). Block 256 threads = 8 warps as 2 (rows) × 4 (columns); tile
// BM × 128 columns × 32 k (BM = 64 or 128); warp tile BM/2 × 32, mma.sync m16n8k16 fp16 → f32.
// Per k-tile (32 rows of W, always inside one quantization group since G % 32 == 0):
//   1. cp.async, kStages deep: the activation tile [BM][32] fp16 (rows resolved once per block: a dense row, a
//      routed token's row of x, or a row of h; missing rows zero-filled), the packed tile [32][16 words], the
//      group's 128 scales and 16 zero words. Columns past `out` are zero-filled (out % 32 == 0 keeps every
//      16-byte copy all-in or all-out).
//   2. dequantization into shared memory, once per block: each thread turns 2 packed words into 16 fp16
//      ((1024 + q) − (1024 + z) is exact in fp16 via the 0x6400 trick, then × s, one rounding) and stores them
//      as Bs[k][col] (row-major k × n);
//   3. each warp: ldmatrix (A) and ldmatrix.trans (B) fragments, MT × 4 mma per 16 k.
// GateUp: the 128 tile columns are 64 columns of w1 and the same 64 of w3, interleaved per 8 (gate j, up j, gate
// j+1, ...), so each thread holds gate and up of the same outputs and writes silu(gate)·up directly as fp16.
// Down: each row's result × its router weight goes to its slot. Dense: f32 y.
// Smem (BM = 128): 4 stages × 12.3 KB + 8.5 KB dequantized tile + row table ≈ 59 KB (opt-in above 48 KB).
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "cuda_check.h"
#include "device_guard.h"
#include "gemm_w4a16.h"

namespace mixq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kStages = 4;
constexpr int BK = 32;          // k rows per tile
constexpr int BN = 128;         // tile columns
constexpr int kWordsPerRow = BN / 8;
constexpr int kALd = BK + 8;    // halfs per activation row in shared memory (80 bytes: ldmatrix conflict-free)
constexpr int kBLd = BN + 8;    // halfs per dequantized row (272 bytes: conflict-free)

enum class Mode { Dense, GateUp, Down };

struct Params {
  const __half* a = nullptr;  // activation rows: x [n, K] (Dense), x [tokens, K] (GateUp), h [capacity, K] (Down)
  int K = 0;                  // in features (= halfs per activation row)
  int n_out = 0;              // output columns: out (Dense), inter (GateUp), hidden (Down)
  int group = 0;
  int rows = 0;               // Dense: n
  AwqMatrix w;                // Dense: the matrix
  float* y = nullptr;         // Dense: [n, out]
  const int32_t* sorted = nullptr;
  const int32_t* expert_ids = nullptr;
  const int32_t* post_pad = nullptr;
  int numel = 0, top_k = 1;
  const ExpertMatrices* table = nullptr;
  __half* h = nullptr;                   // GateUp output [capacity, inter]
  const float* route_weights = nullptr;  // Down: [numel]
  float* slots = nullptr;                // Down output [numel, hidden]
};

template <int BM>
struct Smem {
  static constexpr int kA = BM * kALd * 2;       // bytes of one stage's activation tile
  static constexpr int kP = BK * kWordsPerRow * 4;
  static constexpr int kS = BN * 2;
  static constexpr int kZ = kWordsPerRow * 4;
  static constexpr int kStage = kA + kP + kS + kZ;
  static constexpr int kB = BK * kBLd * 2;
  static constexpr int kRows = BM * 8 + BM * 4;  // row sources (int64) + slots (int32)
  static constexpr int kTotal = kStages * kStage + kB + kRows;
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global → shared copy; bytes == 0 fills zeros (src must still be a valid address).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += a · b: m16n8k16, A row-major fp16, B col-major fp16, f32 accumulators.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Nibbles p and p+4 of `word` (columns 2p and 2p+1 in AWQ order) as the half2 (1024 + lo, 1024 + hi).
__device__ __forceinline__ half2 nibble_pair_plus_1024(uint32_t word, int p) {
  const uint32_t bits = ((word >> (4 * p)) & 0x000F000Fu) | 0x64006400u;
  return *reinterpret_cast<const half2*>(&bits);
}

// Packed word pw (0..15) of a tile row: which matrix (0/1) and which word column of it.
template <Mode kMode>
__device__ __forceinline__ void word_of(int pw, int nb, int& mi, int& word) {
  if constexpr (kMode == Mode::GateUp) {
    mi = pw >> 3;
    word = nb * (kWordsPerRow / 2) + (pw & 7);
  } else {
    mi = 0;
    word = nb * kWordsPerRow + pw;
  }
}
__device__ __forceinline__ const AwqMatrix& pick(const AwqMatrix (&mat)[2], int mi) { return mi ? mat[1] : mat[0]; }

// Tile column block (of 8) where packed word pw lands: GateUp interleaves gate and up per 8 columns.
template <Mode kMode>
__device__ __forceinline__ int column_block_of(int pw) {
  return kMode == Mode::GateUp ? 2 * (pw & 7) + (pw >> 3) : pw;
}

template <int BM, Mode kMode>
struct Tile {
  unsigned char* smem;
  __device__ __half* a(int s) const { return reinterpret_cast<__half*>(smem + s * Smem<BM>::kStage); }
  __device__ uint32_t* p(int s) const {
    return reinterpret_cast<uint32_t*>(smem + s * Smem<BM>::kStage + Smem<BM>::kA);
  }
  __device__ __half* sc(int s) const {
    return reinterpret_cast<__half*>(smem + s * Smem<BM>::kStage + Smem<BM>::kA + Smem<BM>::kP);
  }
  __device__ uint32_t* z(int s) const {
    return reinterpret_cast<uint32_t*>(smem + s * Smem<BM>::kStage + Smem<BM>::kA + Smem<BM>::kP + Smem<BM>::kS);
  }
  __device__ __half* b() const { return reinterpret_cast<__half*>(smem + kStages * Smem<BM>::kStage); }
  __device__ int64_t* row_src() const {
    return reinterpret_cast<int64_t*>(smem + kStages * Smem<BM>::kStage + Smem<BM>::kB);
  }
  __device__ int* row_slot() const { return reinterpret_cast<int*>(row_src() + BM); }
};

// Issues the copies of k-tile kt into stage s.
template <int BM, Mode kMode>
__device__ __forceinline__ void load_stage(const Params& p, const AwqMatrix (&mat)[2], const Tile<BM, kMode>& t,
                                           int s, int kt, int nb) {
  const int tid = threadIdx.x;
  const int64_t* row_src = t.row_src();
  for (int idx = tid; idx < BM * 4; idx += kThreads) {  // activations: 4 chunks of 8 halfs per row
    const int r = idx >> 2, c = idx & 3;
    const int64_t src = row_src[r];
    const __half* g = src >= 0 ? p.a + src + kt * BK + c * 8 : p.a;
    cp_async16(t.a(s) + r * kALd + c * 8, g, src >= 0 ? 16 : 0);
  }
  const int n_words = p.n_out / 8;
  const int group_row = kt * BK / p.group;
  int mi, word;
  if (tid < BK * 4) {  // packed weights: 4 chunks of 4 words per k row
    const int k = tid >> 2, c = tid & 3;
    word_of<kMode>(4 * c, nb, mi, word);
    const bool ok = word < n_words;
    const int32_t* g = pick(mat, mi).qweight + (ok ? int64_t(kt * BK + k) * n_words + word : 0);
    cp_async16(t.p(s) + k * kWordsPerRow + 4 * c, g, ok ? 16 : 0);
  } else if (tid < BK * 4 + kWordsPerRow) {  // scales: one chunk of 8 per packed word
    const int c = tid - BK * 4;
    word_of<kMode>(c, nb, mi, word);
    const bool ok = word < n_words;
    const __half* g = pick(mat, mi).scales + (ok ? int64_t(group_row) * p.n_out + word * 8 : 0);
    cp_async16(t.sc(s) + c * 8, g, ok ? 16 : 0);
  } else if (tid < BK * 4 + kWordsPerRow + kWordsPerRow / 4) {  // zeros: 4 chunks of 4 words
    const int c = tid - BK * 4 - kWordsPerRow;
    word_of<kMode>(4 * c, nb, mi, word);
    const bool ok = word < n_words;
    const int32_t* g = pick(mat, mi).qzeros + (ok ? int64_t(group_row) * n_words + word : 0);
    cp_async16(t.z(s) + 4 * c, g, ok ? 16 : 0);
  }
}

// Stage s's packed tile → fp16 Bs[k][col]: thread = (k row, 2 packed words).
template <int BM, Mode kMode>
__device__ __forceinline__ void dequantize(const Tile<BM, kMode>& t, int s) {
  const int k = threadIdx.x >> 3, wp = threadIdx.x & 7;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int pw = 2 * wp + j;
    const uint32_t qw = t.p(s)[k * kWordsPerRow + pw], zw = t.z(s)[pw];
    const uint4 s4 = *reinterpret_cast<const uint4*>(t.sc(s) + pw * 8);
    const half2* s2 = reinterpret_cast<const half2*>(&s4);
    uint4 out;
    half2* o2 = reinterpret_cast<half2*>(&out);
#pragma unroll
    for (int q = 0; q < 4; ++q)
      o2[q] = __hmul2(__hsub2(nibble_pair_plus_1024(qw, q), nibble_pair_plus_1024(zw, q)), s2[q]);
    *reinterpret_cast<uint4*>(t.b() + k * kBLd + column_block_of<kMode>(pw) * 8) = out;
  }
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + __expf(-g)); }

template <int BM, Mode kMode>
__global__ void __launch_bounds__(kThreads, 2) gemm_w4a16_kernel(const Params p) {
  constexpr int MT = BM / 32;  // m16 tiles per warp (warp rows BM/2)
  constexpr int NT = 4;        // n8 tiles per warp (warp columns 32)
  extern __shared__ __align__(16) unsigned char smem[];
  const Tile<BM, kMode> t{smem};
  const int mb = blockIdx.x, nb = blockIdx.y, tid = threadIdx.x;

  AwqMatrix mat[2];
  if constexpr (kMode == Mode::Dense) {
    mat[0] = mat[1] = p.w;
  } else {
    if (mb * BM >= *p.post_pad) return;  // past the padded routing: nothing (uniform over the block)
    const int e = p.expert_ids[mb];
    if (e < 0) return;
    const ExpertMatrices& em = p.table[e];
    mat[0] = em.w[kMode == Mode::GateUp ? kGate : kDown];
    mat[1] = em.w[kMode == Mode::GateUp ? kUp : kDown];
    if (mat[0].qweight == nullptr || mat[1].qweight == nullptr) return;  // an expert this device does not hold
  }

  // Row table: where each of the block's BM activation rows comes from (−1: zeros) and, grouped, its slot.
  for (int r = tid; r < BM; r += kThreads) {
    const int m = mb * BM + r;
    int64_t src = -1;
    int slot = -1;
    if constexpr (kMode == Mode::Dense) {
      if (m < p.rows) src = int64_t(m) * p.K;
    } else {
      slot = p.sorted[m];
      if (kMode == Mode::Down) src = int64_t(m) * p.K;
      else if (slot < p.numel) src = int64_t(slot / p.top_k) * p.K;
    }
    t.row_src()[r] = src;
    t.row_slot()[r] = slot;
  }
  __syncthreads();

  const int warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 2, wn = warp & 3;
  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

  const int KT = p.K / BK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < KT) load_stage<BM, kMode>(p, mat, t, s, s, nb);
    cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile kt has landed; every warp is done with tile kt−1 (its stage and Bs)
    const int next = kt + kStages - 1;
    if (next < KT) load_stage<BM, kMode>(p, mat, t, next % kStages, next, nb);
    cp_async_commit();
    const int s = kt % kStages;
    dequantize<BM, kMode>(t, s);
    __syncthreads();
    const __half* as = t.a(s);
    const __half* bs = t.b();
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        ldmatrix_x4(af[mt], as + (wm * (BM / 2) + mt * 16 + (lane & 15)) * kALd + ks * 16 + (lane >> 4) * 8);
      uint32_t bf[NT][2];
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, bs + (ks * 16 + (lane & 15)) * kBLd + wn * 32 + np * 16 + (lane >> 4) * 8);
        bf[2 * np][0] = r[0];
        bf[2 * np][1] = r[1];
        bf[2 * np + 1][0] = r[2];
        bf[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma16816(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
    }
  }
  cp_async_wait<0>();

  // Epilogue. Accumulator (mt, nt, c): row wm·BM/2 + mt·16 + lane/4 (+8 for c ≥ 2), column wn·32 + nt·8 +
  // 2·(lane%4) + (c & 1).
  const int gc = 2 * (lane & 3);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {  // accumulator registers 0,1 (row lane/4) and 2,3 (row lane/4 + 8)
      const int r = wm * (BM / 2) + mt * 16 + (lane >> 2) + 8 * hi;
      const int64_t m = int64_t(mb) * BM + r;
      if constexpr (kMode == Mode::GateUp) {
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {  // n8 tile nt: gate, nt + 1: up, of the same 8 outputs
          const int col = nb * (BN / 2) + (wn * 2 + nt / 2) * 8 + gc;
          if (col >= p.n_out) continue;
          const float g0 = acc[mt][nt][2 * hi], g1 = acc[mt][nt][2 * hi + 1];
          const float u0 = acc[mt][nt + 1][2 * hi], u1 = acc[mt][nt + 1][2 * hi + 1];
          *reinterpret_cast<half2*>(p.h + m * p.n_out + col) = __floats2half2_rn(silu(g0) * u0, silu(g1) * u1);
        }
      } else {
        float scale = 1.0f;
        float* out = nullptr;
        if constexpr (kMode == Mode::Down) {
          const int slot = t.row_slot()[r];
          if (slot >= p.numel) continue;  // padding
          scale = p.route_weights[slot];
          out = p.slots + int64_t(slot) * p.n_out;
        } else {
          if (m >= p.rows) continue;
          out = p.y + m * p.n_out;
        }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int col = nb * BN + wn * 32 + nt * 8 + gc;
          if (col >= p.n_out) continue;
          *reinterpret_cast<float2*>(out + col) =
              make_float2(scale * acc[mt][nt][2 * hi], scale * acc[mt][nt][2 * hi + 1]);
        }
      }
    }
}

// Raises the kernel's dynamic shared-memory limit once per device (above 48 KB needs the opt-in).
template <int BM, Mode kMode>
void launch(const Params& p, dim3 grid, cudaStream_t stream) {
  static std::mutex mu;
  static uint64_t raised = 0;  // bit per device ordinal (< 64)
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  {
    std::lock_guard<std::mutex> lock(mu);
    if (device >= 64 || !(raised >> device & 1)) {
      CUDA_CHECK(cudaFuncSetAttribute(gemm_w4a16_kernel<BM, kMode>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Smem<BM>::kTotal));
      if (device < 64) raised |= uint64_t{1} << device;
    }
  }
  gemm_w4a16_kernel<BM, kMode><<<grid, kThreads, Smem<BM>::kTotal, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

template <Mode kMode>
void launch_rows(int block_rows, const Params& p, dim3 grid, cudaStream_t stream) {
  if (block_rows == kGemmRowTileLarge) launch<kGemmRowTileLarge, kMode>(p, grid, stream);
  else launch<kGemmRowTileSmall, kMode>(p, grid, stream);
}

int sm_count(int device) {
  static std::mutex mu;
  static std::map<int, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return cache[device] = sms;
}

std::string shape_text(int64_t in, int64_t out, int group) {
  return " (in=" + std::to_string(in) + ", out=" + std::to_string(out) + ", group=" + std::to_string(group) + ")";
}

// The limits of gemm_w4a16.h for one matrix [in → out].
void check_shape(const std::string& op, int64_t in, int64_t out, int group) {
  const std::string shape = shape_text(in, out, group);
  if (group <= 0 || group % 32 != 0) throw Error(op + ": group size must be a positive multiple of 32" + shape);
  if (in <= 0 || out <= 0 || in % group != 0 || out % 32 != 0)
    throw Error(op + ": need in % group == 0 and out % 32 == 0" + shape);
  if (in >= (int64_t{1} << 31) / 32 || out >= (int64_t{1} << 31) / 32) throw Error(op + ": shape too large" + shape);
}

void check_aligned(const std::string& op, std::initializer_list<std::pair<const void*, const char*>> tensors) {
  for (auto [ptr, name] : tensors)
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      throw Error(op + ": tensor '" + name + "' is not 16-byte aligned");
}

void check_routes(const std::string& op, const MoeRoutes& r) {
  if (r.block_rows != kGemmRowTileSmall && r.block_rows != kGemmRowTileLarge)
    throw Error(op + ": routes.block_rows " + std::to_string(r.block_rows) + " is not a row tile of the kernel (" +
                std::to_string(kGemmRowTileSmall) + " or " + std::to_string(kGemmRowTileLarge) + ")");
  if (r.top_k < 1 || r.num_experts < 1 || r.numel < 0 || r.numel % r.top_k != 0)
    throw Error(op + ": routes need top_k >= 1, num_experts >= 1 and numel a multiple of top_k (numel=" +
                std::to_string(r.numel) + ", top_k=" + std::to_string(r.top_k) + ")");
  if (r.numel + int64_t{r.num_experts} * r.block_rows >= (int64_t{1} << 31))
    throw Error(op + ": " + std::to_string(r.numel) + " routed slots are too many for int32 slot ids");
}

Params grouped_params(const __half* a, const MoeRoutes& routes, const ExpertMatrices* table, int64_t K, int64_t n_out,
                      int group) {
  Params p;
  p.a = a;
  p.K = static_cast<int>(K);
  p.n_out = static_cast<int>(n_out);
  p.group = group;
  p.sorted = routes.sorted_token_ids;
  p.expert_ids = routes.expert_ids;
  p.post_pad = routes.num_tokens_post_pad;
  p.numel = static_cast<int>(routes.numel);
  p.top_k = routes.top_k;
  p.table = table;
  return p;
}

unsigned max_blocks(const MoeRoutes& r) {
  return static_cast<unsigned>((r.numel + int64_t{r.num_experts} * (r.block_rows - 1) + r.block_rows - 1) /
                               r.block_rows);
}

}  // namespace

int gemm_w4a16_row_tile(int64_t n, int64_t out, int device) {
  const int64_t large_blocks = (n + kGemmRowTileLarge - 1) / kGemmRowTileLarge * ((out + BN - 1) / BN);
  return large_blocks >= 2 * int64_t{sm_count(device)} ? kGemmRowTileLarge : kGemmRowTileSmall;
}

int gemm_w4a16_moe_block_rows(int64_t numel, int num_experts) {
  return numel >= int64_t{192} * std::max(num_experts, 1) ? kGemmRowTileLarge : kGemmRowTileSmall;
}

void launch_gemm_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, float* y,
                       int64_t n, int64_t in, int64_t out, int group_size, cudaStream_t stream) {
  if (n <= 0) return;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const int rows = gemm_w4a16_row_tile(n, out, device);
  Params p;
  p.a = x;
  p.K = static_cast<int>(in);
  p.n_out = static_cast<int>(out);
  p.group = group_size;
  p.rows = static_cast<int>(n);
  p.w = AwqMatrix{qweight, qzeros, scales};
  p.y = y;
  const dim3 grid(static_cast<unsigned>((n + rows - 1) / rows), static_cast<unsigned>((out + BN - 1) / BN));
  launch_rows<Mode::Dense>(rows, p, grid, stream);
}

void gemm_w4a16(const __half* x, const int32_t* qweight, const int32_t* qzeros, const __half* scales, float* y,
                int64_t n, int64_t in, int64_t out, int group_size, cudaStream_t stream) {
  const std::string op = "gemm_w4a16";
  check_shape(op, in, out, group_size);
  if (n < 0 || n >= (int64_t{1} << 31) / 2) throw Error(op + ": token count " + std::to_string(n) + " out of range");
  check_aligned(op, {{x, "x"}, {qweight, "qweight"}, {qzeros, "qzeros"}, {scales, "scales"}, {y, "y"}});
  const int device = device_of_tensors(
      op.c_str(), {{x, "x"}, {qweight, "qweight"}, {qzeros, "qzeros"}, {scales, "scales"}, {y, "y"}});
  DeviceGuard guard(device);
  check_stream_device(op.c_str(), stream, device);
  launch_gemm_w4a16(x, qweight, qzeros, scales, y, n, in, out, group_size, stream);
}

void launch_moe_gemm_w4a16_gate_up(const __half* x, const MoeRoutes& routes, const ExpertMatrices* table, __half* h,
                                   int64_t hidden, int64_t inter, int group_size, cudaStream_t stream) {
  if (routes.numel <= 0) return;
  Params p = grouped_params(x, routes, table, hidden, inter, group_size);
  p.h = h;
  const dim3 grid(max_blocks(routes), static_cast<unsigned>((inter + BN / 2 - 1) / (BN / 2)));
  launch_rows<Mode::GateUp>(routes.block_rows, p, grid, stream);
}

void launch_moe_gemm_w4a16_down(const __half* h, const MoeRoutes& routes, const ExpertMatrices* table,
                                const float* route_weights, float* slots, int64_t hidden, int64_t inter,
                                int group_size, cudaStream_t stream) {
  if (routes.numel <= 0) return;
  Params p = grouped_params(h, routes, table, inter, hidden, group_size);
  p.route_weights = route_weights;
  p.slots = slots;
  const dim3 grid(max_blocks(routes), static_cast<unsigned>((hidden + BN - 1) / BN));
  launch_rows<Mode::Down>(routes.block_rows, p, grid, stream);
}

void moe_gemm_w4a16_gate_up(const __half* x, const MoeRoutes& routes, const ExpertMatrices* table, __half* h,
                            int64_t hidden, int64_t inter, int group_size, cudaStream_t stream) {
  const std::string op = "moe_gemm_w4a16_gate_up";
  check_shape(op, hidden, inter, group_size);
  check_routes(op, routes);
  if (routes.numel == 0) return;
  check_aligned(op, {{x, "x"}, {h, "h"}, {table, "table"}});
  const int device = device_of_tensors(op.c_str(), {{x, "x"},
                                                    {routes.sorted_token_ids, "sorted_token_ids"},
                                                    {routes.expert_ids, "expert_ids"},
                                                    {routes.num_tokens_post_pad, "num_tokens_post_pad"},
                                                    {table, "table"},
                                                    {h, "h"}});
  DeviceGuard guard(device);
  check_stream_device(op.c_str(), stream, device);
  launch_moe_gemm_w4a16_gate_up(x, routes, table, h, hidden, inter, group_size, stream);
}

void moe_gemm_w4a16_down(const __half* h, const MoeRoutes& routes, const ExpertMatrices* table,
                         const float* route_weights, float* slots, int64_t hidden, int64_t inter, int group_size,
                         cudaStream_t stream) {
  const std::string op = "moe_gemm_w4a16_down";
  check_shape(op, inter, hidden, group_size);
  check_routes(op, routes);
  if (routes.numel == 0) return;
  check_aligned(op, {{h, "h"}, {table, "table"}, {slots, "slots"}});
  const int device = device_of_tensors(op.c_str(), {{h, "h"},
                                                    {routes.sorted_token_ids, "sorted_token_ids"},
                                                    {routes.expert_ids, "expert_ids"},
                                                    {routes.num_tokens_post_pad, "num_tokens_post_pad"},
                                                    {table, "table"},
                                                    {route_weights, "route_weights"},
                                                    {slots, "slots"}});
  DeviceGuard guard(device);
  check_stream_device(op.c_str(), stream, device);
  launch_moe_gemm_w4a16_down(h, routes, table, route_weights, slots, hidden, inter, group_size, stream);
}

}  // namespace mixq::cuda
