# One helper family for every target, in the spirit of abseil's absl_cc_library.
#
#   fg_cc_library(NAME n SRCS ... HDRS ... DEPS ...)
#   fg_cc_test(NAME n SRCS ... DEPS ... [LABELS unit])      -> registered with ctest
#   fg_cc_benchmark(NAME n SRCS ... DEPS ...)              -> smoke-run by ctest (label bench-smoke)

function(fg_cc_library)
  cmake_parse_arguments(FG "" "NAME" "SRCS;HDRS;DEPS" ${ARGN})
  if(FG_SRCS)
    add_library(${FG_NAME} STATIC ${FG_SRCS} ${FG_HDRS})
    target_link_libraries(${FG_NAME} PUBLIC ${FG_DEPS})
    target_include_directories(${FG_NAME} PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR})
  else()
    add_library(${FG_NAME} INTERFACE)
    target_link_libraries(${FG_NAME} INTERFACE ${FG_DEPS})
    target_include_directories(${FG_NAME} INTERFACE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR})
  endif()
endfunction()

function(fg_cc_test)
  cmake_parse_arguments(FG "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS" ${ARGN})
  add_executable(${FG_NAME} ${FG_SRCS})
  target_link_libraries(${FG_NAME} PRIVATE ${FG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT FG_LABELS)
    set(FG_LABELS unit)
  endif()
  if(NOT FG_TIMEOUT)
    set(FG_TIMEOUT 300)
  endif()
  add_test(NAME ${FG_NAME} COMMAND ${FG_NAME} ${FG_ARGS})
  set_tests_properties(${FG_NAME} PROPERTIES LABELS "${FG_LABELS}" TIMEOUT ${FG_TIMEOUT})
endfunction()

function(fg_cc_benchmark)
  cmake_parse_arguments(FG "" "NAME" "SRCS;DEPS;SMOKE_ARGS" ${ARGN})
  add_executable(${FG_NAME} ${FG_SRCS})
  target_link_libraries(${FG_NAME} PRIVATE ${FG_DEPS} benchmark::benchmark)
  # Smoke run: every benchmark once with a tiny time budget, so they keep compiling and running.
  add_test(NAME ${FG_NAME}_smoke COMMAND ${FG_NAME} --benchmark_min_time=0.001 ${FG_SMOKE_ARGS})
  set_tests_properties(${FG_NAME}_smoke PROPERTIES LABELS "bench-smoke" TIMEOUT 300
                       ENVIRONMENT "FLOODGATE_BENCH_SMOKE=1")
endfunction()
