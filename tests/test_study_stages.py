"""reward_models, train, evaluate and report end to end on the micro config, in one Prefect
test server, after prepare and base (tests/test_stages.py's fixture)."""

from __future__ import annotations

import json

import mlflow
import pytest

from tests.conftest import MICRO, micro_overrides
from tests.test_stages import micro_run  # noqa: F401  (the prepare + base fixture)


@pytest.fixture(scope="module")
def study(micro_run):  # noqa: F811
    from pipelines.evaluate import evaluate
    from pipelines.report import report
    from pipelines.reward_models import reward_models
    from pipelines.train import train

    root = micro_run[0]
    overrides = micro_overrides(root)
    reward_models(params=str(MICRO), overrides=overrides)
    trained = {v: train(variant=v, params=str(MICRO), overrides=overrides) for v in ("none", "star")}
    evaluated = {c: evaluate(checkpoint=c, params=str(MICRO), overrides=overrides) for c in ("base", "none-s0", "star-s0")}
    out = report(params=str(MICRO), overrides=overrides)
    return root, trained, evaluated, out


def test_train_writes_variant_metrics_and_curve(study) -> None:
    root, trained, _, _ = study
    for variant in ("none", "star"):
        summary = json.loads((root / "metrics" / "train" / f"{variant}-s0.json").read_text())
        assert summary == trained[variant]
        assert summary["iterations"] == 2 and 0 <= summary["reward_start"] <= 1
        curve = (root / "metrics" / "train" / f"{variant}-s0.csv").read_text().splitlines()
        assert curve[0].startswith("iteration,reward_mean") and len(curve) == 3
        assert (root / "models" / "checkpoints" / f"{variant}-s0" / "pytorch_lora_weights.safetensors").is_file()
    assert not (root / "outputs" / "train" / "star-s0").exists() or not any((root / "outputs" / "train" / "star-s0").iterdir())


def test_evaluate_scores_every_task(study) -> None:
    root, _, evaluated, _ = study
    for checkpoint, metrics in evaluated.items():
        assert json.loads((root / "metrics" / "eval" / f"{checkpoint}.json").read_text()) == metrics
        assert 0 <= metrics["geneval_overall"] <= 1
        assert 0 <= metrics["ocr_accuracy"] <= 1 and 0 <= metrics["ocr_edit_distance"] <= 1
        assert metrics["pickscore_mean"] == metrics["pickscore_mean"]  # not NaN
        for task in ("geneval", "ocr", "pickscore"):
            assert (root / "eval" / checkpoint / f"{task}.png").stat().st_size > 1000


def test_report_has_table_curves_and_maps(study) -> None:
    root, _, _, out = study
    table = (out / "table.md").read_text()
    for variant in ("base", "none", "star"):
        assert f"| {variant} |" in table
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # curves + STAR maps (no spatial variant here)
    assert (out / "reward_curves.png").is_file() and (out / "maps_star.png").is_file()


def test_mlflow_runs_are_tagged_for_comparison(study) -> None:
    root = study[0]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["star"], output_format="list")
    stages = [(r.data.tags["stage"], r.data.tags.get("variant")) for r in runs]
    for expected in [("train", "none"), ("train", "star"), ("evaluate", "base"), ("evaluate", "star"), ("report", "all")]:
        assert expected in stages
    train_run = next(r for r in runs if r.data.tags["stage"] == "train" and r.data.tags["variant"] == "star")
    assert train_run.data.tags["seed"] == "0" and train_run.data.tags["task"] == "geneval"
    assert "reward_mean" in train_run.data.metrics and "final/reward_end" in train_run.data.metrics
    client = mlflow.MlflowClient()
    figures = [a.path for a in client.list_artifacts(train_run.info.run_id, "figures")]
    assert any("allocation_" in f for f in figures) and any("samples_" in f for f in figures)
