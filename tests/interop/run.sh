#!/usr/bin/env bash
# llama.cpp interoperability check (docs/QUANTIZATION.md, "llama.cpp interoperability"):
# GGUF files from `edgelm quantize` run in llama.cpp, llama.cpp-quantized files run in edgelm,
# with the same greedy tokens (near-ties aside), logits within 1.0 on the same context, and
# the same tensor bytes and metadata values for the same input.
#
#   tests/interop/run.sh [EDGELM_BIN]        (default: $EDGELM_BIN, else build/bin/edgelm)
#
# Needs: the built edgelm and edgelm_interop_greedy (same folder, or $EDGELM_INTEROP_GREEDY):
#   cmake --build build --target edgelm_cli edgelm_interop_greedy
# plus node/npm, a C++ compiler, git and /usr/bin/python3 with numpy (apt). llama.cpp comes
# from npm (versions pinned in package-lock.json): @node-llama-cpp/linux-x64's prebuilt CPU
# libraries, and node-llama-cpp's git bundle of the matching llama.cpp source, from which only
# the headers are used to compile llama_driver.cc. Everything is cached in the git-ignored
# node_modules/ and .cache/ here; the model files go to a temporary folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
edgelm="${1:-${EDGELM_BIN:-$root/build/bin/edgelm}}"
python="${PYTHON:-/usr/bin/python3}"
shared="${EDGELM_SHARED_DIR:-$root/../shared}"

die() {
  echo "interop: $*" >&2
  exit 1
}
edgelm="$(realpath -e "$edgelm" 2>/dev/null)" || die "no edgelm at ${1:-${EDGELM_BIN:-build/bin/edgelm}} (cmake --build build --target edgelm_cli, or pass its path)"
greedy="${EDGELM_INTEROP_GREEDY:-$(dirname "$edgelm")/edgelm_interop_greedy}"
[[ -x "$edgelm" ]] || die "no edgelm at $edgelm (cmake --build build --target edgelm_cli, or pass its path)"
[[ -x "$greedy" ]] || die "no edgelm_interop_greedy at $greedy (cmake --build build --target edgelm_interop_greedy)"
[[ "$(uname -sm)" == "Linux x86_64" ]] || die "the prebuilt llama.cpp libraries used here are for Linux x86-64"
for tool in npm git c++; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install nodejs npm git g++)"
done
"$python" -c "import numpy" 2>/dev/null || die "$python cannot import numpy (apt-get install python3-numpy)"
[[ -f "$shared/models/stories260K/stories260K.bin" ]] || die "no stories260K in $shared/models"

# 1-2. llama.cpp from npm and the driver compiled against its headers (sets $driver).
source "$here/setup_llama.sh"
echo "llama.cpp $tag (source commit $(cut -c1-12 "$cache/commit"), prebuilt by node-llama-cpp $node_llama_version)"
"$driver" info | sed 's/^/  /'

# 3. Models: stories260K (trained; 64/172-wide rows, so K-quants fall back) and a random
# llama with 256-divisible widths (K-quants apply), F16.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stories="$shared/models/stories260K"
"$edgelm" quantize "$stories/stories260K.bin" "$work/stories260K-bin-f32.gguf" --type f32 \
  --threads 1 >/dev/null 2>&1
"$python" "$root/tools/make_random_checkpoint.py" --preset tinyllama-1.1b --layers 2 --vocab 2048 \
  --hidden 512 --heads 8 --kv-heads 2 --ffn 1536 --dtype f16 --out "$work/random-hf" \
  --gguf "$work/random-f16.gguf" >/dev/null

# 4. Both directions, every type; NAME|edgelm's input|llama.cpp's input|prompt.
"$python" "$here/interop.py" --edgelm "$edgelm" --greedy "$greedy" --llama-driver "$driver" \
  --work "$work" --gptq-text "$shared/data/tinystories-sample/TinyStories-valid.txt" \
  --model "stories260K|$stories/stories260K.gguf|$stories/stories260K.gguf|Once upon a time" \
  --model "stories260K-bin|$stories/stories260K.bin|$work/stories260K-bin-f32.gguf|Once upon a time" \
  --model "random|$work/random-hf|$work/random-f16.gguf|Once upon a time"
