# CUDA backend: sources (one op per file pair), its tests and its benchmark.
# Included by native/CMakeLists.txt when nvcc is found; sets MIXQ_CUDA_SOURCES for the mixq_cuda library.
set(MIXQ_CUDA_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/argmax.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_decode.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_prefill.cu
  ${CMAKE_CURRENT_LIST_DIR}/backend_cuda.cu
  ${CMAKE_CURRENT_LIST_DIR}/cuda_check.cu
  ${CMAKE_CURRENT_LIST_DIR}/device_buffer.cu
  ${CMAKE_CURRENT_LIST_DIR}/device_guard.cu
  ${CMAKE_CURRENT_LIST_DIR}/elementwise.cu
  ${CMAKE_CURRENT_LIST_DIR}/embed.cu
  ${CMAKE_CURRENT_LIST_DIR}/gemm_w4a16.cu
  ${CMAKE_CURRENT_LIST_DIR}/gemv_w4a16.cu
  ${CMAKE_CURRENT_LIST_DIR}/kv_append.cu
  ${CMAKE_CURRENT_LIST_DIR}/linear.cu
  ${CMAKE_CURRENT_LIST_DIR}/moe.cu
  ${CMAKE_CURRENT_LIST_DIR}/moe_align_block_size.cu
  ${CMAKE_CURRENT_LIST_DIR}/moe_dense.cu
  ${CMAKE_CURRENT_LIST_DIR}/rms_norm.cu
  ${CMAKE_CURRENT_LIST_DIR}/rope.cu
  ${CMAKE_CURRENT_LIST_DIR}/router.cu
)

# GPU tests: plain executables linked against mixq_cuda only (not the CPU engine), so they build and run
# even while the engine core is in flux. Each exits 77 (ctest SKIP) with "SKIPPED: no CUDA device" when no GPU
# is visible, as on CI. (Linking to mixq_cuda by name works before native/CMakeLists.txt defines it.)
if(MIXQ_BUILD_TESTS)
  enable_testing()
  set(MIXQ_CUDA_TESTS
    test_cuda_device
    test_cuda_seed_bug
    test_cuda_rms_norm
    test_cuda_moe_align
    test_cuda_gemv_w4a16
    test_cuda_gemm_w4a16
    test_cuda_attention
  )
  foreach(t ${MIXQ_CUDA_TESTS})
    add_executable(${t} ${CMAKE_CURRENT_LIST_DIR}/../tests/${t}.cu)
    target_link_libraries(${t} PRIVATE mixq_cuda)
    add_test(NAME ${t} COMMAND ${t})
    set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600 LABELS cuda)
  endforeach()
  # Kernel timings with the bandwidth ceiling measured in the same run; JSON on stdout.
  add_executable(cuda_bench ${CMAKE_CURRENT_LIST_DIR}/../bench/cuda_bench.cu)
  target_link_libraries(cuda_bench PRIVATE mixq_cuda ${CMAKE_DL_LIBS})  # cuBLAS (the f16 ceiling) is dlopen-ed
endif()
