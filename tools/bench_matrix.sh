#!/usr/bin/env bash
# The quantization benchmark matrix of docs/BENCHMARKS.md: random-weight
# checkpoints at the SmolLM2-135M, Qwen2.5-0.5B and TinyLlama-1.1B shapes,
# quantized to each type, run by `edgelm bench` at 1 and 2 threads (prefill of
# a 128-token prompt, 64 decoded tokens, roofline, peak RSS) into one table
# (markdown + JSON) and a plot.
#
#   tools/bench_matrix.sh [WORK_DIR] [TYPES]      (defaults: /tmp/edgelm-bench, "q8_0 q4_0 q4_k")
#
# PAIRED=1 adds `edgelm bench --paired-bandwidth` (each row decodes 5 more
# times, each against a bandwidth reading right before it; twice the time).
#
# About 6 GB of disk in WORK_DIR; generated files are reused on a second run.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/edgelm-bench}
types=${2:-q8_0 q4_0 q4_k}
edgelm=${EDGELM:-build/bin/edgelm}
mkdir -p "$work"

models=()
for preset in smollm2-135m qwen2.5-0.5b tinyllama-1.1b; do
  f16="$work/$preset-f16.gguf"
  if [[ ! -f $f16 ]]; then
    /usr/bin/python3 tools/make_random_checkpoint.py --preset "$preset" --dtype f16 \
      --out "$work/$preset-hf" --gguf "$f16"
    rm -rf "$work/$preset-hf"
  fi
  for type in $types; do
    out="$work/$preset-$type.gguf"
    [[ -f $out ]] || "$edgelm" quantize "$f16" "$out" --type "$type" | grep -E '^(size|tensors):'
    models+=(-m "$out")
  done
done

paired=()
[[ ${PAIRED:-0} == 1 ]] && paired=(--paired-bandwidth)
"$edgelm" bench "${models[@]}" -t 1,2 -r 5 "${paired[@]}" --json "$work/bench.json" --markdown "$work/bench.md"
/usr/bin/python3 tools/plot_bench.py "$work/bench.json" "$work/bench.png"
echo "table: $work/bench.md, plot: $work/bench.png"
