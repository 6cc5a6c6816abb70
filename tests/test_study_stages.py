"""reward_models, train, evaluate and report end to end on the micro config, in one Prefect
test server, after prepare and base (tests/test_stages.py's fixture)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from star.rl.prompt_source import load_task_prompts
from tests.conftest import MICRO, micro_overrides

VARIANTS = {"none": {"allocation": "none"}, "star": {"allocation": "star"},
            "text-star": {"allocation": "star", "rewards": {"task": "ocr"}}}
"""The micro study: the micro config's two variants and one trained on OCR (a name the micro task study does not
use)."""


@pytest.fixture(scope="module")
def study(micro_run):
    from pipelines.evaluate import evaluate
    from pipelines.report import report
    from pipelines.reward_models import reward_models
    from pipelines.train import train

    root = micro_run[0]
    # a second training task: its section in the report, against the base only (no `none` on it)
    overrides = micro_overrides(root) | {"studies": {"default": {"variants": VARIANTS}}}
    reward_models(params=str(MICRO), overrides=overrides)
    trained = {v: train(variant=v, params=str(MICRO), overrides=overrides) for v in VARIANTS}
    evaluated = {c: evaluate(checkpoint=c, params=str(MICRO), overrides=overrides)
                 for c in ("base", *(f"{v}-s0" for v in VARIANTS))}
    for suffix in (".json", ".scores.csv"):  # a stale file of a variant no longer in the study
        shutil.copy(root / "metrics" / "eval" / f"star-s0{suffix}", root / "metrics" / "eval" / f"ghost-s0{suffix}")
    out = report(params=str(MICRO), overrides=overrides)
    return root, trained, evaluated, out


def test_train_writes_variant_metrics_and_curve(study) -> None:
    root, trained, _, _ = study
    for variant in ("none", "star"):
        summary = json.loads((root / "metrics" / "train" / f"{variant}-s0.json").read_text())
        assert summary == trained[variant]
        # GenEval + 0.01 PickScore (|s| <= 100)
        assert summary["iterations"] == 2 and -1 <= summary["reward_start"] <= 2
        curve = (root / "metrics" / "train" / f"{variant}-s0.csv").read_text().splitlines()
        assert curve[0].startswith("iteration,reward_mean") and len(curve) == 3
        assert (root / "models" / "checkpoints" / f"{variant}-s0" / "pytorch_lora_weights.safetensors").is_file()
    assert (not (root / "outputs" / "train" / "star-s0").exists()
            or not any((root / "outputs" / "train" / "star-s0").iterdir()))


def test_evaluate_scores_every_task(study) -> None:
    root, _, evaluated, _ = study
    for checkpoint, metrics in evaluated.items():
        assert json.loads((root / "metrics" / "eval" / f"{checkpoint}.json").read_text()) == metrics
        assert 0 <= metrics["geneval_overall"] <= 1
        assert 0 <= metrics["ocr_accuracy"] <= 1 and 0 <= metrics["ocr_edit_distance"] <= 1
        assert metrics["pickscore_mean"] == metrics["pickscore_mean"]  # not NaN
        for task in ("geneval", "ocr", "pickscore"):
            assert (root / "eval" / checkpoint / f"{task}.png").stat().st_size > 1000


def test_evaluate_writes_one_score_per_prompt_and_noise(study) -> None:
    root = study[0]
    scores = pd.read_csv(root / "metrics" / "eval" / "star-s0.scores.csv")
    summary = json.loads((root / "metrics" / "eval" / "star-s0.json").read_text())
    # eval.noises 4 x (6 GenEval prompts, one per tag; 2 OCR; 2 PickScore)
    # and its training pool (the micro config trains on every training prompt) on eval.pool_noises 1
    pool = len(load_task_prompts(root / "data" / "prompts", "geneval", "train"))
    # and the held-out GenEval prompts again under the training sampler (train.steps, ODE)
    assert scores.groupby("task").size().to_dict() == {"geneval": 24, "ocr": 8, "pickscore": 8, "pool_geneval": pool,
                                                       "train_sampler_geneval": 24}
    assert "train_sampler_geneval_overall" in summary and "pool_reward_geneval" in summary
    assert scores[scores.task == "pool_geneval"].reward.notna().all()
    assert sorted(scores.noise.unique()) == [0, 1, 2, 3]
    geneval = scores[scores.task == "geneval"]
    assert summary["geneval_overall"] == pytest.approx(geneval.groupby("tag").correct.mean().mean())


def test_report_has_intervals_differences_curves_and_maps(study) -> None:
    root, _, _, out = study
    table = (out / "table.md").read_text()
    for variant in ("base", "none", "star"):
        assert f"| {variant} |" in table
    assert "ghost" not in table, "only the study's declared checkpoints enter the report"
    held_out = table.split("## Held-out scores")[1].split("##")[0]
    star_row = next(line for line in held_out.splitlines() if line.startswith("| star |"))
    assert star_row.count("[") == 3 * 3  # per task: value, vs none, vs base, each with an interval
    base_row = next(line for line in held_out.splitlines() if line.startswith("| base |"))
    assert base_row.split("|")[3].strip().endswith("]"), "a value is not marked as a resolved difference"
    assert "params hash" in table and "commit" in table
    page = (out / "report.html").read_text()
    assert "Checkpoints side by side" in page
    # GenEval: differences vs the reference (none) and vs base, side by side, reward curves, STAR maps (no spatial
    # variant here); OCR: difference vs base, reward curves, maps
    assert page.count("data:image/png;base64,") == 5 + 3
    for name in ("geneval_difference_vs_reference.png", "geneval_difference_vs_base.png", "side_by_side.png",
                 "geneval_reward_curves.png", "maps_star.png", "ocr_difference_vs_base.png", "ocr_reward_curves.png",
                 "maps_text-star.png"):
        assert (out / name).is_file(), name
    assert not (out / "ocr_difference_vs_reference.png").exists(), "one variant trained on OCR: no reference"


def test_the_base_is_scored_on_each_training_tasks_pool(study) -> None:
    root = study[0]
    base = pd.read_csv(root / "metrics" / "eval" / "base.scores.csv")
    assert {"pool_geneval", "pool_ocr", "train_sampler_geneval", "train_sampler_ocr"} <= set(base.task)
    star = pd.read_csv(root / "metrics" / "eval" / "star-s0.scores.csv")
    def pairs(scores: pd.DataFrame) -> list[tuple]:
        pool = scores[scores.task == "pool_geneval"]
        return list(zip(pool.prompt_index, pool.noise, pool.tag))

    assert pairs(base) == pairs(star), "the base and a trained variant: the same pool prompts and noises"


def test_report_tests_learning_and_comparisons_paired_by_seed(study) -> None:
    table = (study[3] / "table.md").read_text()
    geneval = table.split("## Trained on GenEval")[1].split("## Trained on OCR")[0]
    power = geneval.split("### Learning and power (paired by seed)")[1].split("### Held-out")[0]
    for row in ("| star − base |", "| star − none |", "| star − 0 |", "| training pool, training reward", "sampler)"):
        assert row in power
    assert "seeds for MDD ≤ 0.04" in power


def test_report_has_one_section_per_training_task(study) -> None:
    out = study[3]
    table = (out / "table.md").read_text()
    geneval, ocr = table.split("## Trained on GenEval: none, star")[1].split("## Trained on OCR: text-star")
    assert "| star |" in geneval and "text-star" not in geneval and "Δ vs none" in geneval
    assert "| text-star |" in ocr and "| star |" not in ocr and "| base |" in ocr
    ocr_row = next(line for line in ocr.split("### Held-out")[1].splitlines() if line.startswith("| text-star |"))
    assert ocr_row.count("[") == 2 * 3, "per task: value and vs base (no reference on OCR)"


def test_side_by_side_marks_each_image_as_the_evaluation_scored_it(study) -> None:
    from pipelines.evaluate import test_records
    from pipelines.report import SIDE_BY_SIDE_TAGS, side_by_side_plan
    from star.config import load_config
    from star.evaluation.report import load_scores

    root = study[0]
    cfg = load_config(MICRO, micro_overrides(root))
    checkpoints = ["base", "none-s0", "star-s0"]
    records = test_records(cfg, "geneval")
    prompts, seeds, correct = side_by_side_plan(records, load_scores(root / "metrics" / "eval", checkpoints), cfg,
                                                checkpoints)
    index = [next(i for i, r in enumerate(records) if r["prompt"] == p) for p in prompts]
    assert [records[i]["tag"] for i in index] == [t for t in SIDE_BY_SIDE_TAGS if any(r["tag"] == t for r in records)]
    assert seeds == [cfg.eval.seed + i for i in index], "noise 0 of each prompt, as evaluated"
    for checkpoint in checkpoints:
        rows = pd.read_csv(root / "metrics" / "eval" / f"{checkpoint}.scores.csv")
        evaluated = rows[(rows.task == "geneval") & (rows.noise == 0)].set_index("prompt_index").correct
        assert correct[checkpoint] == [bool(evaluated[i]) for i in index]


def test_mlflow_runs_are_tagged_for_comparison(study) -> None:
    root = study[0]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["star"], output_format="list")
    stages = [(r.data.tags["stage"], r.data.tags.get("variant")) for r in runs]
    for expected in [("train", "none"), ("train", "star"), ("evaluate", "base"), ("evaluate", "star"),
                     ("report", "all")]:
        assert expected in stages
    names = {r.info.run_name for r in runs}
    assert {"train-none-s0", "train-star-s0", "evaluate-base", "evaluate-star-s0", "report"} <= names
    train_run = next(r for r in runs if r.data.tags["stage"] == "train" and r.data.tags["variant"] == "star")
    assert train_run.data.tags["seed"] == "0" and train_run.data.tags["task"] == "geneval"
    assert "reward_mean" in train_run.data.metrics and "final/reward_end" in train_run.data.metrics
    # figures are MLflow images with a key and a step (the UI's per-step slider, from 0), in a run
    # nested under the training run whose few params leave the image cards to the images
    figures = next(r for r in runs if r.data.tags["stage"] == "figures" and r.data.tags["variant"] == "star")
    assert figures.data.tags["mlflow.parentRunId"] == train_run.info.run_id and figures.info.status == "FINISHED"
    assert figures.info.run_name == "train-star-s0-figures" and len(figures.data.params) <= 5
    assert len(train_run.data.params) > 50  # the training run keeps every knob
    images = [a.path for a in mlflow.MlflowClient().list_artifacts(figures.info.run_id, "images")]
    for key in ("samples", "allocation"):
        assert any(path.startswith(f"images/{key}+step+0+") for path in images), images


def test_prefect_flow_runs_are_named_like_the_mlflow_runs(study) -> None:
    import argparse

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from pipelines.cli import named_flow
    from pipelines.evaluate import evaluate

    with get_client(sync_client=True) as client:
        names = {run.name for run in client.read_flow_runs(limit=200, sort=FlowRunSort.START_TIME_DESC)}
    assert {"train-none-s0", "train-star-s0"} <= names
    args = argparse.Namespace(stage="evaluate", checkpoint="star-s0")
    assert named_flow(evaluate, args).flow_run_name == "evaluate-star-s0"  # what `python -m pipelines` runs


def test_training_run_logs_its_variant_as_a_loadable_model(study) -> None:
    from star.config import load_config
    from star.models.sd3 import load_pipeline
    from star.models.variants import LORA_FILE, load_variant
    from star.sampling.sampler import sample_ode

    root = study[0]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["star"], output_format="list")}
    run_id = runs["train-star-s0"].info.run_id
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/star-s0")  # the one-liner the README gives
    prompts = ["a photo of a red star", "a photo of two blue circles"]
    images = model.predict(prompts)
    cfg = load_config(MICRO, micro_overrides(root))
    pipe = load_variant(load_pipeline(root / "models" / "base"), root / "models" / "checkpoints" / "star-s0")
    expected = sample_ode(pipe, prompts, [0, 1], cfg.eval.steps, cfg.eval.guidance_scale)
    assert images.dtype == np.uint8 and images.shape == (2, *expected.shape[2:], 3)
    assert np.abs(images.astype(int) - (expected * 255).round().permute(0, 2, 3, 1).numpy().astype(int)).max() <= 1
    logged = mlflow.get_logged_model(model.metadata.model_id)
    assert logged.params["train.allocation"] == "star" and logged.source_run_id == run_id
    weights = mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/artifacts/star-s0/{LORA_FILE}")
    assert Path(weights).read_bytes() == (root / "models" / "checkpoints" / "star-s0" / LORA_FILE).read_bytes()


def test_evaluations_are_nested_under_the_training_run_they_evaluate(study) -> None:
    root = study[0]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["star"], output_format="list")}
    for variant in ("none", "star"):
        evaluation, training = runs[f"evaluate-{variant}-s0"], runs[f"train-{variant}-s0"]
        assert evaluation.data.tags["mlflow.parentRunId"] == training.info.run_id
    assert "mlflow.parentRunId" not in runs["evaluate-base"].data.tags
    assert "iteration" not in runs["train-star-s0"].data.metrics, "the step is the axis, not a metric"
    experiment = mlflow.get_experiment_by_name("star")
    assert "one run per DVC stage" in experiment.tags["mlflow.note.content"]


def test_under_two_processes_rank_0_alone_logs_the_run(study, prefect_api_url: str) -> None:
    """`accelerate launch`/`torchrun` with two CPU processes (gloo) through the stage's command
    line: one MLflow run, with the curve, the images and the model, written by rank 0."""
    import os
    import subprocess
    import sys

    from pipelines.shared_server import free_port
    from tests.conftest import REPO

    root = study[0]
    overrides = [f"{section}.{key}={value}" for section, values in micro_overrides(root).items()
                 for key, value in values.items()]
    port = free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "pipelines", "train", "--variant", "none", "--seed", "7", "--params", str(MICRO),
               *[arg for override in overrides for arg in ("-S", override)]]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_api_url}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    runs = [r for r in mlflow.search_runs(experiment_names=["star"], output_format="list")
            if r.info.run_name == "train-none-s7"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "one run, by rank 0"
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "reward_mean")
    assert [m.step for m in history] == [1, 2]
    assert mlflow.pyfunc.load_model(f"runs:/{runs[0].info.run_id}/none-s7") is not None  # named like its checkpoint
    assert json.loads((root / "metrics" / "train" / "none-s7.json").read_text())["iterations"] == 2
