# CUDA sources of the CUDA backend (one op per file).
set(MIXQ_CUDA_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/backend_cuda.cu
)
