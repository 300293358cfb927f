# Sourced by tests/interop/run.sh and tools/bench_vs_llama.sh: installs llama.cpp's prebuilt
# CPU libraries from npm (pinned in package-lock.json; cached in the git-ignored node_modules/)
# and compiles llama_driver.cc against the headers of exactly that release (cached in .cache/).
# Needs $here (this folder), $python and die(); sets $driver, $libs, $tag, $cache and
# $node_llama_version, and leaves the working directory at $here.

# 1. llama.cpp from npm, reinstalled only when the lock file changes.
cd "$here"
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ "$(cat node_modules/.interop-lock 2>/dev/null)" != "$lock_hash" ]]; then
  # --omit=optional: node-llama-cpp's other platforms' binaries (CUDA, Vulkan, ...);
  # --ignore-scripts: its postinstall would look for or build binaries; only files are needed.
  npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$lock_hash" >node_modules/.interop-lock
fi
libs="$here/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
bundle="$here/node_modules/node-llama-cpp/llama/gitRelease.bundle"
tag="$("$python" -c "import json; print(json.load(open('node_modules/node-llama-cpp/llama/llama.cpp.info.json'))['tag'])")"
libllama="$(ls "$libs"/libllama.v*.so 2>/dev/null | head -1)"
libggml="$(ls "$libs"/libggml.v*.so 2>/dev/null | head -1)"
[[ -n "$libllama" && -n "$libggml" && -f "$libs/libggml-base.so" ]] || die "no llama.cpp libraries in $libs"

# 2. The headers of exactly that llama.cpp release, and the driver compiled against them.
cache="$here/.cache/llama-$tag"
driver="$cache/llama_driver"
if [[ ! -f "$cache/include/llama.h" ]]; then
  rm -rf "$cache" && mkdir -p "$cache"
  git init -q "$cache/git"
  git -C "$cache/git" fetch -q "$bundle" HEAD
  git -C "$cache/git" archive FETCH_HEAD include ggml/include | tar -x -C "$cache"
  git -C "$cache/git" rev-parse FETCH_HEAD >"$cache/commit"
  rm -rf "$cache/git"
fi
if [[ ! -x "$driver" || "$here/llama_driver.cc" -nt "$driver" ]]; then
  c++ -std=c++17 -O1 -Wall -Wextra -Werror -isystem "$cache/include" -isystem "$cache/ggml/include" \
    "$here/llama_driver.cc" -o "$driver" "$libllama" "$libggml" "$libs/libggml-base.so" -ldl \
    -Wl,-rpath,"$libs"
fi
node_llama_version="$("$python" -c "import json; print(json.load(open('node_modules/node-llama-cpp/package.json'))['version'])")"

