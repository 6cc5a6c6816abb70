#!/usr/bin/env bash
# Quickstart 2: set up .venv if needed, lint with ruff, then run the test suite on two workers, a
# test file at a time on each (its module-scoped project is built once). Extra args go to pytest:
# `bash scripts/test.sh -m "not slow"` is the fast subset, `-n 0` runs in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
ruff check .
python -m pytest -n 2 --dist loadfile "$@"
