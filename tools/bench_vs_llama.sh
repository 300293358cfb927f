#!/usr/bin/env bash
# edgelm against llama.cpp on the same GGUF files and the same machine: prefill of a
# PROMPT-token prompt and decode of DECODE tokens, per thread count, each engine's median of
# REPS repetitions, alternating between the engines file by file so that both see the same
# phase of a shared host. Writes a markdown table with the ratios (edgelm / llama.cpp).
#
#   tools/bench_vs_llama.sh OUT.md FILE.gguf...        (env: THREADS="1 2" PROMPT=128 DECODE=64 REPS=5)
#
# llama.cpp is the release tests/interop/ pins (node-llama-cpp's prebuilt CPU libraries; ggml
# picks the best CPU variant, e.g. with AMX on Sapphire Rapids and later), driven by
# tests/interop/llama_driver.cc's `bench` (llama-bench's pp/tg: an empty cache per repetition,
# the prompt in one batch, then one token at a time with fixed ids, so no sampling is timed;
# edgelm's bench times its greedy sampling too). Both use their default F16 KV cache.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
here="$root/tests/interop"
python="${PYTHON:-/usr/bin/python3}"
edgelm="${EDGELM:-$root/build/bin/edgelm}"
threads="${THREADS:-1 2}"
prompt="${PROMPT:-128}"
decode="${DECODE:-64}"
reps="${REPS:-5}"

die() {
  echo "bench_vs_llama: $*" >&2
  exit 1
}
[[ $# -ge 2 ]] || die "usage: tools/bench_vs_llama.sh OUT.md FILE.gguf..."
out="$1"
shift
[[ -x "$edgelm" ]] || die "no edgelm at $edgelm (scripts/build.sh)"
for tool in npm git c++; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install nodejs npm git g++)"
done
source "$here/setup_llama.sh"
cd "$root"
echo "llama.cpp $tag (prebuilt by node-llama-cpp $node_llama_version); $("$driver" info | tail -1)"

{
  echo "| file | threads | prefill edgelm | prefill llama.cpp | ratio | decode edgelm | decode llama.cpp | ratio |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$out"
for file in "$@"; do
  [[ -f "$file" ]] || die "no file $file"
  for t in $threads; do
    # edgelm: its bench's text output (prefill / decode medians).
    e="$("$edgelm" bench -m "$file" -t "$t" -r "$reps" -p "$prompt" -n "$decode" 2>/dev/null)"
    ep="$(sed -n 's/^prefill: *\([0-9.]*\) tok\/s.*/\1/p' <<<"$e")"
    ed="$(sed -n 's/^decode: *\([0-9.]*\) tok\/s.*/\1/p' <<<"$e")"
    l="$("$driver" bench "$file" "$prompt" "$decode" "$t" "$reps" 2>/dev/null)"
    lp="$(awk '$1 == "prefill" {print $2}' <<<"$l")"
    ld="$(awk '$1 == "decode" {print $2}' <<<"$l")"
    [[ -n "$ep" && -n "$ed" && -n "$lp" && -n "$ld" ]] || die "no result for $file at $t threads"
    row="$("$python" -c "import sys; ep, ed, lp, ld = map(float, sys.argv[1:5]); \
print(f'| {sys.argv[5]} | {sys.argv[6]} | {ep:.1f} | {lp:.1f} | {ep / lp:.2f}x | {ed:.1f} | {ld:.1f} | {ed / ld:.2f}x |')" \
      "$ep" "$ed" "$lp" "$ld" "$(basename "$file")" "$t")"
    echo "$row" | tee -a "$out"
  done
done
echo "table: $out"
