"""The whole DAG end to end: `dvc repro` on the micro config in a copy of the project, under one
Prefect server as `scripts/repro.sh` runs it, then the metrics, report and MLflow runs it left,
and a second, plain `dvc repro` that has nothing to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from star.config import load_config, write_params
from star.evaluation.evaluate import HEADLINE
from tests.conftest import MICRO, REPO

COPIED = ["pipelines", "star", "rewards", "dvc.yaml", ".dvcignore"]


def _run(command: list[str], cwd: Path, with_stderr: bool = False) -> str:
    """``command`` in ``cwd``; its stdout. Stages report to the session's Prefect server (what
    ``scripts/repro.sh`` gives them): ``PREFECT_API_URL`` is the setting the ``project`` fixture
    activated."""
    from prefect.settings import PREFECT_API_URL

    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "OMP_NUM_THREADS": "1", "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + (result.stderr if with_stderr else "")


@pytest.fixture(scope="module")
def project(prefect_api_url: str, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dag")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    write_params(load_config(MICRO, overrides={"threads": 1}), root / "params.yaml")
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True)  # the plot template
    # as scripts/repro.sh runs it: every stage against one shared Prefect server (the session's
    # here; tests/test_shared_server.py starts its own)
    out = _run([sys.executable, "-m", "pipelines.shared_server", "--", "dvc", "repro"], root, with_stderr=True)
    assert f"shared Prefect server at {prefect_api_url}" in out and "temporary server" not in out
    return root


@pytest.fixture
def own_project(project: Path, tmp_path: Path) -> Path:
    """A copy of the reproduced project for a test that changes it (params, git history, DVC
    state): the tests do not depend on their order."""
    copy = tmp_path / "dag"
    shutil.copytree(project, copy, symlinks=True)
    return copy


def test_every_stage_left_its_metrics(project: Path) -> None:
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], project))
    files = {path for workspace in shown.values() for path in workspace["data"]}
    for expected in ["metrics/base.json", "metrics/reward_models.json", "metrics/eval/base.json",
                     "metrics/eval/none-s0.json", "metrics/eval/star-s0.json", "metrics/train/star-s0.json"]:
        assert expected in files, sorted(files)
    star = json.loads((project / "metrics/eval/star-s0.json").read_text())
    assert 0 <= star["geneval_overall"] <= 1 and 0 <= star["ocr_accuracy"] <= 1


def test_report_and_mlflow_runs(project: Path) -> None:
    table = (project / "reports/table.md").read_text()
    assert "| star |" in table and "| none |" in table and "| base |" in table
    assert (project / "reports/report.html").stat().st_size > 10_000
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns.db'}")
    stages = {r.data.tags["stage"] for r in mlflow.search_runs(experiment_names=["star"], output_format="list")}
    assert stages >= {"prepare", "base", "reward_models", "train", "evaluate", "report"}


def test_each_study_has_its_experiment_tagged_runs_and_a_registered_best_checkpoint(project: Path) -> None:
    """The default study's runs in `star`, the others' in `star-<study>`; every run tagged with
    its study and sourced by its stage's command; each study's best checkpoint per training task
    registered."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns.db'}")
    for study, experiment in (("default", "star"), ("tasks", "star-tasks"), ("ablations", "star-ablations")):
        runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
        assert {r.info.run_name for r in runs} >= {"evaluate-base", "report"}, experiment
        assert {r.data.tags["study"] for r in runs} == {study}, experiment
        train = next(r for r in runs if r.data.tags["stage"] == "train")
        assert train.data.tags["mlflow.source.name"] == (
            f"python -m pipelines train{'' if study == 'default' else f' --study {study}'} "
            f"--variant {train.data.tags['variant']} --seed {train.data.tags['seed']}")
    client = mlflow.MlflowClient()
    for name, experiment, task, checkpoints in (("star-geneval-best", "star", "geneval", {"none-s0", "star-s0"}),
                                                 ("star-tasks-ocr-best", "star-tasks", "ocr", {"ocr-star-s0"})):
        version = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
        assert version.tags["checkpoint"] in checkpoints and 0 <= float(version.tags[HEADLINE[task]]) <= 1
        runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
        trained = next(r for r in runs if r.info.run_name == f"train-{version.tags['checkpoint']}")
        assert version.run_id == trained.info.run_id, "the version is the model its training run logged"
    model = mlflow.pyfunc.load_model("models:/star-geneval-best/latest")  # the README's one-liner
    assert model.predict(["a photo of a red star"]).shape[0] == 1


def test_prefect_flow_runs_carry_the_stages_tags(project: Path) -> None:
    """`python -m pipelines` tags each flow run as the MLflow run is (the UI's filter)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    def tags(name: str) -> list[set[str]]:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])),
                                          limit=50, sort=FlowRunSort.START_TIME_DESC)
        return [set(run.tags) for run in found]

    assert {"stage:train", "study:default", "variant:star", "seed:0", "task:geneval"} in tags("train-star-s0")
    assert {"stage:train", "study:tasks", "variant:ocr-star", "seed:0", "task:ocr"} in tags("train-ocr-star-s0")
    assert {"stage:evaluate", "study:tasks", "checkpoint:ocr-star-s0"} in tags("evaluate-ocr-star-s0")
    assert {"stage:base"} in tags("base")


def test_the_micro_trainings_move_the_weights(project: Path) -> None:
    """The micro study's reward varies (a little PickScore beside GenEval, which scores 0 on the
    untrained micro model), so a broken update would show: every training's LoRA up-projections,
    zero at initialisation, have moved, and every iteration's rewards have a spread."""
    from safetensors.torch import load_file

    for variant in ("none", "star"):
        weights = load_file(project / f"models/checkpoints/{variant}-s0/pytorch_lora_weights.safetensors")
        last = max(int(name.split("transformer_blocks.")[1].split(".")[0]) for name in weights)
        # the last block's text queries feed nothing (SD3's context_pre_only block): no gradient reaches them
        idle = f"transformer_blocks.{last}.attn.add_q_proj."
        ups = {name: tensor for name, tensor in weights.items() if "lora_B" in name and idle not in name}
        still = sorted(name for name, tensor in ups.items() if not tensor.abs().max() > 0)
        assert ups and not still, f"{variant}: these adapters did not move: {still}"
        curve = (project / f"metrics/train/{variant}-s0.csv").read_text().splitlines()
        header = curve[0].split(",")
        spreads = [float(row.split(",")[header.index("reward_std")]) for row in curve[1:]]
        assert spreads and min(spreads) > 0, spreads

def test_the_task_study_writes_only_under_its_own_folder(project: Path) -> None:
    """`report_tasks` (the task study) ran in the same `dvc repro`: its OCR-trained variant has its
    checkpoint, metrics and report section under studies/tasks, nothing of it in the default
    study's folders, and `dvc repro report` (the default target) does not reach it."""
    tasks = project / "studies/tasks"
    assert (tasks / "checkpoints/ocr-star-s0").is_dir()
    ocr = json.loads((tasks / "metrics/eval/ocr-star-s0.json").read_text())
    assert 0 <= ocr["ocr_accuracy"] <= 1 and 0 <= ocr["ocr_edit_distance"] <= 1
    assert "## Trained on OCR: ocr-star" in (tasks / "reports/table.md").read_text()
    assert (tasks / "reports/maps_ocr-star.png").is_file(), "STAR's maps on signs"
    assert not (project / "metrics/eval/ocr-star-s0.json").exists()
    assert "ocr-star" not in (project / "reports/table.md").read_text()
    default_target = _run(["dvc", "dag", "--md", "report"], project)
    assert "train@star-0" in default_target and "_tasks" not in default_target and "_ablations" not in default_target
    ablations = project / "studies/ablations"
    assert (ablations / "checkpoints/nft-s0").is_dir() and "| nft |" in (ablations / "reports/table.md").read_text()


def test_plots_overlay_every_variant_on_one_chart_per_metric(project: Path) -> None:
    shown = json.loads(_run(["dvc", "plots", "show", "--json"], project))
    # the micro study has no DiffusionNFT variants, so no map figure of them
    errors = sorted(e["name"] for e in shown.get("errors", []))
    assert errors == ["reports/maps_nft-oracle.png", "reports/maps_nft-star.png"], shown.get("errors")
    for name in ("training reward", "policy loss", "KL to the reference policy", "clip fraction",
                 "map localisation on the core objects"):
        (plot,) = shown["data"][name]
        runs = {row["run"] for row in plot["content"]["data"]["values"]}
        assert runs == {"none-s0", "star-s0"}, (name, runs)
        assert plot["content"]["encoding"]["color"]["field"] == "variant"
    assert shown["data"]["reports/geneval_difference_vs_reference.png"][0]["type"] == "image"


def test_second_repro_is_a_no_op(project: Path) -> None:
    out = _run(["dvc", "repro"], project)
    assert "Running stage" not in out, out[-2000:]
    assert "up to date" in _run(["dvc", "status"], project).lower()


def test_a_temporary_experiment_logs_into_the_projects_store(own_project: Path) -> None:
    """`dvc exp run --temp` runs the stages in a workspace under .dvc/tmp/exps that it deletes
    afterwards; the relative tracking URI must still land the runs in the project's store."""
    def evaluations() -> int:
        mlflow.set_tracking_uri(f"sqlite:///{own_project / 'mlruns.db'}")
        runs = mlflow.search_runs(experiment_names=["star"], output_format="list")
        return sum(run.info.run_name == "evaluate-base" for run in runs)

    assert load_config(own_project / "params.yaml").tracking.uri == "sqlite:///mlruns.db"  # relative
    before = evaluations()
    _run(["git", "add", "-A"], own_project)
    _run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "micro study"],
         own_project)
    _run(["dvc", "exp", "run", "--temp", "-S", "eval.guidance_scale=3.0", "evaluate_base"], own_project)
    assert evaluations() == before + 1
    assert not list((own_project / ".dvc" / "tmp" / "exps").glob("**/mlruns.db")), (
        "no store left in a temporary workspace")


def test_a_change_to_one_variant_reruns_only_its_stages_and_the_report(own_project: Path) -> None:
    """What `dvc exp run -S studies.default.variants.star.gamma=4` does: only star's stages and the report
    run."""
    params = own_project / "params.yaml"
    gamma = load_config(params).train.gamma + 1.0  # not the default: an unchanged checkpoint would skip its evaluation
    write_params(load_config(params, {"studies": {"default": {"variants": {"star": {"gamma": gamma}}}}}), params)
    out = _run(["dvc", "repro"], own_project)
    stages = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    assert stages == ["evaluate@star-0", "report", "train@star-0"], out[-2000:]


def test_pretrained_model_skips_the_embedded_pretraining(own_project: Path) -> None:
    """With ``model.source: pretrained`` the base stage records the model instead of training
    one, and the stages after it load that model by ``from_pretrained`` (here: a saved copy of
    the micro base, standing in for a hub id)."""
    saved = own_project.parent / "saved_model"
    shutil.copytree(own_project / "models/base", saved)
    cfg = load_config(own_project / "params.yaml",
                      overrides={"model": {"source": "pretrained", "pretrained": str(saved)}})
    write_params(cfg, own_project / "params.yaml")
    out = _run(["dvc", "repro", "evaluate_base"], own_project)
    assert "Running stage 'base'" in out and "Running stage 'evaluate_base'" in out
    assert "Running stage 'prepare'" not in out
    assert json.loads((own_project / "models/base/pretrained.json").read_text())["pretrained"] == str(saved)
    assert not (own_project / "models/base/transformer").exists()
    assert json.loads((own_project / "metrics/base.json").read_text())["embedded_pretraining"] == 0.0
    assert 0 <= json.loads((own_project / "metrics/eval/base.json").read_text())["geneval_overall"] <= 1
    assert "up to date" in _run(["dvc", "status", "base"], own_project).lower()
