#!/usr/bin/env bash
# Quickstart 1: set up .venv if needed, then reproduce a study with DVC. One Prefect server
# serves every stage instead of a temporary server per stage (pipelines/shared_server.py); it
# stops when dvc repro ends, however it ends.
#   bash scripts/repro.sh          the default study (GenEval): dvc repro report
#   bash scripts/repro.sh ablations the ablation study (controls, halves, FDFO, DGPO): dvc repro report_ablations
#   bash scripts/repro.sh tasks    the task study (OCR, preference, a reward mix): dvc repro report_tasks
#   bash scripts/repro.sh ARGS...  any other arguments go to dvc repro as they are
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") set -- report ;;
  tasks) shift; set -- report_tasks "$@" ;;
  ablations) shift; set -- report_ablations "$@" ;;
esac
bash scripts/setup.sh
source .venv/bin/activate
exec python -m pipelines.shared_server -- dvc repro "$@"
