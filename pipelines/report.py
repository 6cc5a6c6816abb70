"""Stage ``report``: the study's comparison table (markdown + self-contained HTML), reward
curves and allocation-map figures, written to ``reports/`` and logged to MLflow.

    python -m pipelines.report
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import run_stage, stage_config
from pipelines.evaluate import test_records
from pipelines.tracking import stage_run
from rewards.registry import build_reward
from star.config import Config
from star.maps import model_allocation_maps
from star.models import pipeline_for
from star.report import collect_rows, html_page, markdown_table, plot_curves
from star.variants import load_variant
from star.visualize import allocation_overlay

MAP_PROMPTS = 4
"""Prompts shown in each allocation-map figure (one per GenEval task family, in file order)."""


MAP_VMAX = 4.0
"""One colour scale for every map figure: 0 … 4 × the uniform weight (the default w_max)."""


@task(cache_policy=NO_CACHE)
def map_figure(cfg: Config, variant: str, out: Path) -> Path | None:
    """Allocation maps across denoising steps of ``variant``'s first seed, over its images,
    with each map's localisation on the core objects the GenEval detector finds."""
    checkpoint = cfg.paths.checkpoints / f"{variant}-s{cfg.study.seeds[0]}"
    if not checkpoint.is_dir():
        return None
    variant_cfg = cfg.for_variant(variant)
    pipe = load_variant(pipeline_for(cfg.model, cfg.paths.base_model), checkpoint)
    records = test_records(cfg, "geneval")
    picked = [next(r for r in records if r["tag"] == tag) for tag in ("two_object", "position", "color_attr", "colors")]
    reward = build_reward(cfg.rewards.model_copy(update={"task": "geneval", "weights": None}), cfg.paths.reward_models)
    images, maps, scores = model_allocation_maps(pipe, picked[:MAP_PROMPTS], variant_cfg.train, cfg.eval.seed, reward)
    steps = sorted({0, variant_cfg.train.steps // 3, 2 * variant_cfg.train.steps // 3, variant_cfg.train.steps - 1})
    title = f"{variant}: allocation weights (colour 0 … {MAP_VMAX:g}; loc. = weight share on the detected objects / their area share)"
    return allocation_overlay(images, maps, steps, [r["prompt"] for r in picked], out / f"maps_{variant}.png",
                              scores, MAP_VMAX, title)


@flow(name="report")
def report(params: str = "params.yaml", overrides: dict[str, Any] | None = None) -> Path:
    cfg = stage_config(params, overrides)
    out = cfg.paths.reports
    out.mkdir(parents=True, exist_ok=True)
    order = list(cfg.study.variants)
    rows = collect_rows(cfg.paths.metrics / "eval", cfg.paths.metrics / "train", order)
    table = markdown_table(rows)
    curves = plot_curves(cfg.paths.metrics / "train", order, out / "reward_curves.png")
    capturing = [v for v in order if cfg.for_variant(v).train.allocation in ("star", "spatial", "shuffled", "oracle")]
    maps = [p for p in (map_figure(cfg, v, out) for v in capturing) if p is not None]
    title = f"STAR study: training task {cfg.rewards.task}, {len(cfg.study.seeds)} seed(s)"
    (out / "table.md").write_text(f"# {title}\n\n{table}")
    notes = "GenEval: strict accuracy (mean of six tasks); OCR NED: mean normalised edit distance (lower is better)."
    (out / "report.html").write_text(html_page(title, table, [curves, *maps], notes))
    with stage_run(cfg, "report", ["study"], tags={"variant": "all"}):
        for path in [out / "table.md", out / "report.html", curves, *maps]:
            mlflow.log_artifact(str(path), "report")
    get_run_logger().info("report written to %s\n%s", out, table)
    return out


if __name__ == "__main__":
    run_stage(report, __doc__)
