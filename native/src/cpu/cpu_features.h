// Run-time x86 CPU feature detection (cpuid + xgetbv), so one binary picks AVX2 or AVX-512
// kernels on the machine it runs on.
#pragma once
#include <string>
#include <vector>

namespace mixq {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  bool amx_tile = false;
  bool amx_int8 = false;
  bool amx_bf16 = false;
};

// Detected once; OS support for the register state (XCR0) is checked, not only cpuid bits.
const CpuFeatures& cpu_caps();
// Names of the detected features: "avx2", "fma", "f16c", "avx512f", ..., "amx_bf16".
std::vector<std::string> cpu_features();
// "AVX-512" / "AVX2" / "scalar": the widest dense-kernel level usable here.
std::string cpu_simd_level();

}  // namespace mixq
