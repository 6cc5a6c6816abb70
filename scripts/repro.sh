#!/usr/bin/env bash
# Quickstart 1: set up .venv if needed, then reproduce the study with DVC (extra args go to dvc repro).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
dvc repro "$@"
