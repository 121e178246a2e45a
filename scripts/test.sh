#!/usr/bin/env bash
# The whole test suite: set-up (packages, default model, build), then every test through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${ATTNSCOPE_BUILD_DIR:-build}
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 1200 -j "$(nproc)"
