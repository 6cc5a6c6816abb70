#!/usr/bin/env bash
# Create .venv at the repo root when missing and install the project into it (once per
# version of pyproject.toml and constraints.txt). torch is installed first, pinned to its CPU
# build: a looser torch requirement would pull gigabytes of CUDA wheels. torchvision is never
# installed. Every package is held at its version in constraints.txt: unpinned, two fresh
# installs of the same commit trained different world-CLIP reward models (docs/method.md §0).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "error: Python >= 3.11 is needed ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.star-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
  if .venv/bin/python -m pip show torchvision >/dev/null 2>&1; then
    echo "error: torchvision got installed; it breaks the CPU torch (remove what pulled it in)" >&2; exit 1
  fi
  echo "$want" > "$stamp"
fi
