#!/usr/bin/env bash
# Installs the Debian 12 packages edgelm needs to build and test (run as root or with sudo).
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config clang clang-format
  nlohmann-json3-dev libpcre2-dev libutf8proc-dev libcli11-dev libcpp-httplib-dev
  googletest libgtest-dev libbenchmark-dev
  python3 python3-numpy python3-matplotlib
)
if [[ "${EDGELM_WITH_ARM64:-1}" == 1 ]]; then
  packages+=(g++-aarch64-linux-gnu qemu-user)
fi
if [[ "${EDGELM_WITH_BROWSER:-1}" == 1 ]]; then
  packages+=(chromium nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian (e.g. a preinstalled Node.js); don't fight it.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs/}")
  missing=("${missing[@]/npm/}")
fi
read -ra missing <<<"${missing[*]}"
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
