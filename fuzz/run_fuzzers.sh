#!/usr/bin/env bash
# Builds every fuzz/*_fuzz.cc with clang + libFuzzer + ASan/UBSan and runs each
# for SECONDS (default 30). Fails if any target crashes, leaks, times out or
# runs out of memory. Seeds come from fuzz/corpus/<name>/ (read-only); new
# inputs go to $BUILD/fuzz-corpus/<name>/ and crash inputs to $BUILD/fuzz-artifacts/.
#
#   fuzz/run_fuzzers.sh [SECONDS]
#   EDGELM_FUZZ_BUILD_DIR=... EDGELM_FUZZ_JOBS=2 fuzz/run_fuzzers.sh 60
set -euo pipefail

seconds="${1:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EDGELM_FUZZ_BUILD_DIR:-$root/build-fuzz}"
jobs="${EDGELM_FUZZ_JOBS:-2}"
max_len="${EDGELM_FUZZ_MAX_LEN:-65536}"
rss_limit_mb="${EDGELM_FUZZ_RSS_LIMIT_MB:-2048}"

mkdir -p "$build"
generator=()
if command -v ninja > /dev/null; then generator=(-G Ninja); fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGELM_FUZZ=ON -DEDGELM_BUILD_TESTS=OFF \
  -DEDGELM_BUILD_BENCH=OFF > "$build/configure.log" 2>&1 || {
  cat "$build/configure.log"
  exit 1
}

targets=()
for src in "$root"/fuzz/*_fuzz.cc; do
  [[ -e "$src" ]] || continue
  targets+=("$(basename "$src" .cc)")
done
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "no fuzz/*_fuzz.cc targets found" >&2
  exit 1
fi
cmake --build "$build" --target "${targets[@]}" -j "$jobs"

# UBSan is recoverable in this build; make any report fatal so it counts as a crash.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"

failed=()
for target in "${targets[@]}"; do
  name="${target%_fuzz}"
  work_corpus="$build/fuzz-corpus/$name"
  artifacts="$build/fuzz-artifacts"
  mkdir -p "$work_corpus" "$artifacts"
  corpora=("$work_corpus")
  if [[ -d "$root/fuzz/corpus/$name" ]]; then corpora+=("$root/fuzz/corpus/$name"); fi
  log="$build/fuzz-$name.log"
  echo "=== $target: ${seconds}s (log: $log)"
  if "$build/bin/$target" -max_total_time="$seconds" -max_len="$max_len" \
    -rss_limit_mb="$rss_limit_mb" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$name-" "${corpora[@]}" > "$log" 2>&1; then
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log" || true
  else
    echo "FAILED: $target (exit $?), last lines of $log:"
    tail -n 40 "$log"
    failed+=("$target")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzers with failures: ${failed[*]}" >&2
  exit 1
fi
echo "all fuzzers ran clean: ${targets[*]}"
