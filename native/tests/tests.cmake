# C++ tests run by ctest. Tests that need ../shared/fixtures print SKIPPED (exit code 77) when it is absent.
# MIXQ_REPO_ROOT lets tests find models/ and ../shared without depending on the working directory.
get_filename_component(MIXQ_REPO_ROOT ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)
function(mixq_test name)
  add_executable(${name} ${CMAKE_CURRENT_LIST_DIR}/${name}.cpp ${CMAKE_CURRENT_LIST_DIR}/test_util.cpp)
  target_link_libraries(${name} PRIVATE mixq_engine)
  target_compile_definitions(${name} PRIVATE MIXQ_REPO_ROOT="${MIXQ_REPO_ROOT}")
  add_test(NAME ${name} COMMAND ${name})
  # The device checker is always on in tests.
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1800 ENVIRONMENT "MIXQ_CHECK_DEVICES=1")
endfunction()

set(MIXQ_TESTS
  test_awq_kernels
  test_awq_format
  test_awq_quant
  test_reference
  test_ppl
  test_kv_reuse
  test_generate
  test_bad_input
  test_hostile
  test_ops
  test_model
  test_qwen3moe
  test_bench
  test_placement
  test_backend_ops
  test_profiler
  test_gpu_model
)
foreach(t ${MIXQ_TESTS})
  mixq_test(${t})
endforeach()
# The golden test again on the AVX2 and the plain scalar kernels (machines without AVX-512 run these).
foreach(isa avx2 scalar)
  add_test(NAME test_reference_${isa} COMMAND test_reference)
  set_tests_properties(test_reference_${isa} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1800 ENVIRONMENT "MIXQ_CPU_ISA=${isa};MIXQ_CHECK_DEVICES=1")
endforeach()

add_executable(mixq_bench ${CMAKE_CURRENT_LIST_DIR}/../bench/mixq_bench.cpp)
target_link_libraries(mixq_bench PRIVATE mixq_engine)
# The benchmark CLI end to end on the bundled model (short run; the JSON fields are checked by test_bench).
add_test(NAME mixq_bench_fixture COMMAND mixq_bench --model ${MIXQ_REPO_ROOT}/models/mixq-tiny-code
         --prefill 16 --decode 8 --memcpy-mib 16)
set_tests_properties(mixq_bench_fixture PROPERTIES PASS_REGULAR_EXPRESSION "\"decodeTokensPerSec\":[0-9]")

# Dense kernel microbenchmark (GEMV bandwidth, single-thread GEMM GMAC/s).
add_executable(dense_bench ${CMAKE_CURRENT_LIST_DIR}/../bench/dense_bench.cpp)
target_link_libraries(dense_bench PRIVATE mixq_engine)

add_executable(awq_bench ${CMAKE_CURRENT_LIST_DIR}/../bench/awq_bench.cpp)
target_link_libraries(awq_bench PRIVATE mixq_engine)

# The profiler's own cost per op, off and on (docs/BENCHMARKS.md).
add_executable(profiler_bench ${CMAKE_CURRENT_LIST_DIR}/../bench/profiler_bench.cpp)
target_link_libraries(profiler_bench PRIVATE mixq_core)
