#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. release build + every CTest test (unit, end-to-end vs the numpy reference, goldens)
#   2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer, and the
#      multi-threaded ones (thread pool, decode on several threads) under ThreadSanitizer
#   3. libFuzzer targets for the untrusted-file parsers, a bounded time each
#   4. ARM64: cross-compiled kernel and model tests under qemu-user
#   5. the HTTP server's integration and browser tests
#   6. llama.cpp interoperability of quantized GGUF files (llama.cpp's prebuilt CPU libraries via npm)
# Skip parts with EDGELM_SKIP="asan tsan fuzz arm64 server interop" (CI skips nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
skip=" ${EDGELM_SKIP:-} "
jobs=$(nproc)

scripts/install-deps.sh

echo "== clang-format"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror

echo "== release build + tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [[ $skip != *" asan "* ]]; then
  echo "== unit tests under ASan + UBSan"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGELM_SANITIZE=ON \
    -DEDGELM_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan --target unit_tests -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j"$jobs" -L unit
fi

if [[ $skip != *" tsan "* ]]; then
  echo "== multi-threaded tests under ThreadSanitizer"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGELM_TSAN=ON \
    -DEDGELM_BUILD_BENCH=OFF >/dev/null
  cmake --build build-tsan --target kernels_tests model_tests compression_tests -j"$jobs"
  export TSAN_OPTIONS=halt_on_error=1
  build-tsan/src/kernels/kernels_tests --gtest_filter='ThreadPool*:*MatvecRows*'
  build-tsan/src/model/model_tests --gtest_filter='Attention.*'
  build-tsan/src/compression/compression_tests \
    --gtest_filter='*OneDispatch*:*PerKvHead*:*ReLaid*:Gptq.*'
  unset TSAN_OPTIONS
fi

if [[ $skip != *" fuzz "* ]]; then
  echo "== fuzzers"
  fuzz/run_fuzzers.sh "${EDGELM_FUZZ_SECONDS:-30}"
fi

if [[ $skip != *" arm64 "* ]]; then
  echo "== arm64 under qemu"
  scripts/test-arm64.sh
fi

if [[ $skip != *" server "* ]]; then
  echo "== server integration tests"
  tests/server/run.sh --load
fi

if [[ $skip != *" interop "* ]]; then
  echo "== llama.cpp interoperability"
  tests/interop/run.sh build/bin/edgelm
fi
echo "== all tests passed"
