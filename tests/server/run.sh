#!/usr/bin/env bash
# Integration + browser tests for `edgelm serve`; CI entry point.
#
#   tests/server/run.sh [--load]
#
# Needs the built binary (build/bin/edgelm, or set EDGELM_BIN), node >= 20,
# and Chromium at /usr/bin/chromium (or $CHROMIUM) for the browser test.
# --load also runs the bounded load test (load.mjs).
set -euo pipefail
cd "$(dirname "$0")"

if [[ -z "${EDGELM_BIN:-}" && ! -x ../../build/bin/edgelm ]]; then
  echo "run.sh: build/bin/edgelm not found; build it (cmake --build build --target edgelm_cli) or set EDGELM_BIN" >&2
  exit 1
fi
if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
  echo "run.sh: no Chromium at ${CHROMIUM:-/usr/bin/chromium} for the browser test (apt-get install chromium)" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error
node --test --test-concurrency=1 api.test.mjs ui.test.mjs
if [[ "${1:-}" == "--load" ]]; then
  node load.mjs
fi
