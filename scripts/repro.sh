#!/usr/bin/env bash
# Quickstart 1: set up .venv if needed, then reproduce the study with DVC (extra args go to dvc
# repro). One Prefect server serves every stage instead of a temporary server per stage
# (pipelines/shared_server.py); it stops when dvc repro ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
exec python -m pipelines.shared_server -- dvc repro "$@"
