// Error reporting for CUDA_CHECK (cuda_check.h).
#include "cuda_check.h"

namespace mixq::cuda {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  // Drop the directories: "gemv_w4a16.cu:123" is what a reader looks for.
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/' || *p == '\\') base = p + 1;
  throw Error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") in `" +
              expr + "` at " + base + ":" + std::to_string(line));
}

}  // namespace mixq::cuda
