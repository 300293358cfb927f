#!/usr/bin/env bash
# Cross-compiles the kernel, model and generation tests for ARM64 and runs them under qemu-user, once
# on a CPU with every extension (-cpu max: dotprod, fp16, i8mm, ...) and once on
# Cortex-A53/A72 models (plain ARMv8.0 NEON, no dotprod or i8mm), so every
# dispatch path is exercised: kernels_tests runs each ISA the CPU has (neon,
# neon-dotprod and neon-i8mm on max) against the scalar reference, and this
# script checks that each CPU model reports the best ISA expected of it.
#
#   scripts/test-arm64.sh [build-dir] [extra cmake targets...]
#
# Installs what it needs with apt-get (cross compiler, qemu-user, and the arm64
# builds of libraries the top CMakeLists looks up) when they are missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$repo/build-arm64}"
shift || true
tests=(src/kernels/kernels_tests src/model/model_tests src/generation/generation_tests)
targets=(kernels_tests model_tests generation_tests "$@")
jobs="${JOBS:-2}"

need_apt=()
command -v aarch64-linux-gnu-g++ >/dev/null || need_apt+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
command -v ninja >/dev/null || need_apt+=(ninja-build)
[ -f /usr/src/googletest/CMakeLists.txt ] || need_apt+=(googletest)
[ -f /usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake ] || need_apt+=(nlohmann-json3-dev)
# arm64 builds of the libraries the whole project's configure step looks up.
arm_libs=()
[ -f /usr/lib/aarch64-linux-gnu/pkgconfig/libpcre2-8.pc ] || arm_libs+=(libpcre2-dev:arm64)
[ -e /usr/lib/aarch64-linux-gnu/libutf8proc.so ] || arm_libs+=(libutf8proc-dev:arm64)
[ -f /usr/lib/aarch64-linux-gnu/pkgconfig/cpp-httplib.pc ] || arm_libs+=(libcpp-httplib-dev:arm64)
if ((${#need_apt[@]} + ${#arm_libs[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  if ((${#arm_libs[@]})) && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" "${arm_libs[@]}"
fi

cmake -S "$repo" -B "$build" -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/aarch64-toolchain.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DEDGELM_BUILD_BENCH=OFF
cmake --build "$build" --target "${targets[@]}" -j "$jobs"

# The best ISA each CPU model must report (kernels_tests prints "isa: best ...").
declare -A want_isa=([max]=neon-i8mm [cortex-a72]=neon [cortex-a53]=neon)

status=0
for cpu in max cortex-a72 cortex-a53; do
  for test in "${tests[@]}"; do
    name=$(basename "$test")
    echo "=== $name on qemu-aarch64 -cpu $cpu"
    log="$build/$name-$cpu.log"
    if qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "$build/$test" >"$log" 2>&1; then
      grep -E "^(isa|\[==========\]|\[  PASSED  \])" "$log" || true
      if [ "$name" = kernels_tests ] && ! grep -q "^isa: best ${want_isa[$cpu]}," "$log"; then
        echo "FAILED: -cpu $cpu should select ${want_isa[$cpu]} (log: $log)"
        status=1
      fi
    else
      grep -E "FAILED|Failure|isa" "$log" || tail -20 "$log"
      echo "FAILED: $name on -cpu $cpu (log: $log)"
      status=1
    fi
  done
done
exit $status
