#!/usr/bin/env bash
# A five-minute look at the platform, NOT the study: the default study's DAG (prepare → base →
# reward models → train none/star → evaluate → report) on the micro config
# (tests/configs/micro.yaml: a 2-layer model, a few steps each; its trainings move the weights)
# under one shared Prefect server, in a scratch copy of the project, so nothing here is touched.
# The numbers it produces mean nothing; the files, runs and pages are the real ones. `dvc repro`
# in DIR afterwards adds the task and ablation studies' stages (about 4 more minutes).
#
#   bash scripts/look_around.sh [DIR]        # default DIR: /tmp/star-look-around
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DIR=${1:-/tmp/star-look-around}
bash scripts/setup.sh
source .venv/bin/activate
rm -rf "$DIR" && mkdir -p "$DIR"
cp -r pipelines star rewards dvc.yaml .dvcignore .gitignore "$DIR"/
python - "$DIR" <<'EOF'
import sys
from pathlib import Path

from star.config import load_config, write_params

# 4 iterations: the figures' step slider has a middle (0, 1, 2, 3)
micro = load_config("tests/configs/micro.yaml", overrides={"threads": 1, "train": {"iterations": 4}})
write_params(micro, Path(sys.argv[1]) / "params.yaml")
EOF
cd "$DIR"
git init -q && dvc init -q && cp -r "$REPO/.dvc/plots" .dvc/
start=$SECONDS
python -m pipelines.shared_server -- dvc repro report
git add -A && git -c user.name=look-around -c user.email=look-around@localhost commit -qm "the micro study"
cat <<EOF

Done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s. In $DIR (with $REPO/.venv activated):
  reports/report.html                         the study report (tables with intervals, figures)
  dvc exp show --drop '.*' --keep '^Experiment\$|^geneval\.'    held-out score per variant
  dvc metrics show metrics/train/star-s0.json / dvc plots show      a training's metrics; overlaid curves
  mlflow ui --backend-store-uri sqlite:///$DIR/mlruns.db    then http://127.0.0.1:5000
  python -m pipelines.shared_server --ui      then http://127.0.0.1:4200 (the Prefect UI on these runs)
  python -m pipelines train --variant star -S train.allocation=spatail   a config error, at once
EOF
