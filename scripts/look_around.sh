#!/usr/bin/env bash
# A five-minute look at the platform, NOT the study: the whole DAG (prepare → base → reward
# models → train none/star → evaluate → report) on the micro config (tests/configs/micro.yaml:
# a 2-layer model, a few steps each), in a scratch copy of the project, so nothing here is
# touched. The numbers it produces mean nothing; the files, runs and pages are the real ones.
#
#   bash scripts/look_around.sh [DIR]        # default DIR: /tmp/star-look-around
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DIR=${1:-/tmp/star-look-around}
bash scripts/setup.sh
source .venv/bin/activate
rm -rf "$DIR" && mkdir -p "$DIR"
cp -r pipelines star rewards dvc.yaml .dvcignore "$DIR"/
python - "$DIR" <<'EOF'
import sys
from pathlib import Path

from star.config import load_config, write_params

write_params(load_config("tests/configs/micro.yaml", overrides={"threads": 1}), Path(sys.argv[1]) / "params.yaml")
EOF
cd "$DIR"
git init -q && dvc init -q && cp -r "$REPO/.dvc/plots" .dvc/
dvc repro
cat <<EOF

Done. In $DIR:
  reports/report.html                      the study report (tables with intervals, figures)
  dvc metrics show / dvc plots show        metrics of every stage; overlaid training curves
  mlflow ui --backend-store-uri sqlite:///$DIR/mlruns.db    then open http://127.0.0.1:5000
  python -m pipelines train --variant star -S train.allocation=spatail   a config error, at once
EOF
