#!/usr/bin/env bash
# Quickstart 2: set up .venv if needed, lint with ruff, then run the test suite (extra args go to
# pytest: `bash scripts/test.sh -m "not slow"` is the fast subset).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
ruff check .
python -m pytest "$@"
