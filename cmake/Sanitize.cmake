# FLOODGATE_SANITIZE=ON: the one extra clang build that checks three things at once
# (docs/testing.md):
#   - AddressSanitizer and UndefinedBehaviorSanitizer on everything we compile; undefined
#     behaviour aborts (-fno-sanitize-recover), so a test that hits it fails;
#   - clang's thread-safety analysis as an error: every ABSL_GUARDED_BY /
#     ABSL_EXCLUSIVE_LOCKS_REQUIRED is checked at compile time;
#   - libFuzzer coverage instrumentation (-fsanitize=fuzzer-no-link), so the fuzz targets in
#     fuzz/ see our code's edges; the targets themselves link -fsanitize=fuzzer.
# Debian's abseil, grpc++ and protobuf are gcc-built and not instrumented: ASan still checks
# every access our code makes, and the interceptors (malloc, memcpy, ...) cover theirs.
if(NOT FLOODGATE_SANITIZE)
  return()
endif()
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "FLOODGATE_SANITIZE=ON needs clang (the thread-safety analysis and "
          "libFuzzer are clang's), got ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER}. Configure "
          "a fresh build folder with -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang.")
endif()

set(FG_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer)
add_compile_options(${FG_SANITIZE_FLAGS} -fsanitize=fuzzer-no-link
                    -Wthread-safety -Werror=thread-safety)
add_link_options(${FG_SANITIZE_FLAGS})
