#!/usr/bin/env bash
# One table of quality for every quantization type on stories260K (the only
# trained model here), running the quantized files themselves: PPL, PPL ratio,
# mean KLD and top-1 agreement against the F32 original, size and bits/weight.
#
#   tools/quant_quality_table.sh [build/bin/edgelm] > table.md
#
# Calibration (imatrix, GPTQ) and evaluation use disjoint lines of the TinyStories
# sample: lines 1-10 calibrate, lines 11-18 evaluate (67 chunks of 128 tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELM=${1:-build/bin/edgelm}
SHARED=${EDGELM_SHARED_DIR:-../shared}
MODEL=models/stories260K/stories260K.bin
TEXT=$SHARED/data/tinystories-sample/TinyStories-valid.txt
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

head -10 "$TEXT" >"$WORK/calib.txt"
tail -n +11 "$TEXT" >"$WORK/eval.txt"
"$EDGELM" imatrix -m "$MODEL" -f "$WORK/calib.txt" -o "$WORK/im.dat" --ctx 128 >/dev/null 2>&1

row() {  # label, quantize flags...
  local label=$1
  shift
  "$EDGELM" quantize "$MODEL" "$WORK/q.gguf" "$@" >"$WORK/quantize.log" 2>&1
  "$EDGELM" perplexity -m "$WORK/q.gguf" --kl-divergence "$MODEL" -f "$WORK/eval.txt" --ctx 128 \
    --json "$WORK/p.json" >/dev/null 2>&1
  local size types
  size=$(stat -c %s "$WORK/q.gguf")
  types=$(grep '^tensors:' "$WORK/quantize.log" | sed 's/^tensors: *//')
  /usr/bin/python3 - "$label" "$size" "$types" "$WORK/p.json" <<'EOF'
import json, sys
label, size, types, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
r = json.load(open(path))
print(f"| {label} | {size / 1024:.1f} KiB | {r['result']['perplexity']:.4f} "
      f"| {r['ppl_ratio']:.4f} ± {r['ppl_ratio_uncertainty']:.4f} "
      f"| {r['mean_kld']:.5f} ± {r['mean_kld_uncertainty']:.5f} "
      f"| {100 * r['top1_agreement']:.2f} ± {100 * r['top1_agreement_uncertainty']:.2f} | {types} |")
EOF
}

echo "| type (flags) | file | PPL | PPL ratio vs F32 | mean KLD (nats) | top-1 vs F32 (%) | tensors per type |"
echo "|---|---:|---:|---:|---:|---:|---|"
for type in f32 f16 bf16 q8_0 fp8_e4m3 q6_k q5_k q5_1 q5_0 q4_k q4_1 q4_0 q3_k q2_k \
  q5_k_m q4_k_m q4_k_s q3_k_m; do
  row "$type" --type "$type"
done
for type in q8_0 fp8_e4m3 q5_1 q5_0 q4_1 q4_0; do
  row "$type --pure" --type "$type" --pure
  case $type in q8_0 | fp8_e4m3) continue ;; esac  # importance does not change these roundings
  row "$type --pure --imatrix" --type "$type" --pure --imatrix "$WORK/im.dat"
  row "$type --pure --gptq" --type "$type" --pure --gptq "$WORK/calib.txt" --gptq-ctx 128
done
# The default q4_0 mix keeps the tied embedding at q8_0, which --gptq does not touch.
row "q4_0 --imatrix" --type q4_0 --imatrix "$WORK/im.dat"
row "q4_0 --gptq" --type q4_0 --gptq "$WORK/calib.txt" --gptq-ctx 128
row "q4_k_m --imatrix" --type q4_k_m --imatrix "$WORK/im.dat"
row "q4_k_m --gptq" --type q4_k_m --gptq "$WORK/calib.txt" --gptq-ctx 128
