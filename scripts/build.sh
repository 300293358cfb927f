#!/usr/bin/env bash
# Installs dependencies (Debian 12) if needed and builds edgelm into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELM_WITH_ARM64=0 EDGELM_WITH_BROWSER=0 scripts/install-deps.sh  # the test script adds the rest
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo "build: ok (binary: build/bin/edgelm)"
