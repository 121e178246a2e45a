#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: system packages, the default model, the build.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${ATTNSCOPE_BUILD_DIR:-build}

# ---- Debian packages --------------------------------------------------------------------
packages=(build-essential cmake ninja-build pkg-config python3 python3-pip
          libopenblas-dev libicu-dev libzstd-dev nlohmann-json3-dev libcli11-dev catch2 libstb-dev libsodium-dev libigraph-dev
          # syntax (link-grammar + its English dictionary), TOML rule and ontology files
          liblink-grammar-dev link-grammar-dictionaries-en libtomlplusplus-dev
          # the debugger: Vulkan (lavapipe renders on machines without a GPU), GLFW, ImGui, fonts, Xvfb for tests
          libvulkan-dev vulkan-validationlayers mesa-vulkan-drivers glslc libglfw3-dev libimgui-dev libxcb-shm0-dev
          fonts-dejavu-core fonts-noto-cjk xvfb xauth)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- default model ----------------------------------------------------------------------
bash scripts/fetch_model.sh || echo "setup: continuing without the default model (see above)"

# ---- build ------------------------------------------------------------------------------
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" --parallel "$(nproc)"
echo "setup: built $BUILD_DIR/attnscope"
