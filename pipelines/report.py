"""Stage ``report``: the study's comparison table (markdown + self-contained HTML), the
checkpoints side by side on the same prompts and noises, reward curves and allocation-map
figures, written to ``reports/`` and logged to MLflow.

    python -m pipelines report
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import stage_config, stage_main
from pipelines.evaluate import test_records
from pipelines.tracking import experiment_name, register_checkpoint, stage_run
from star.config import Config, fingerprint
from star.diagnostics.maps import model_allocation_maps
from star.evaluation.evaluate import HEADLINE, noise_seeds
from star.evaluation.figures import allocation_overlay, comparison_grid
from star.evaluation.paired import learning_and_power, seed_scores
from star.evaluation.report import (
    TASK_NAMES,
    HtmlSection,
    Section,
    collect_rows,
    compare,
    comparison_table,
    expected_checkpoints,
    html_page,
    load_scores,
    markdown_table,
    plot_curves,
    plot_differences,
    split_checkpoint,
    study_sections,
    study_summary,
    training_curves,
)
from star.files import atomic_file, write_text
from star.models.sd3 import pipeline_for
from star.models.variants import load_variant
from star.sampling.sampler import sample_ode
from star.scoring import build_reward

MAP_PROMPTS = 4
"""Prompts shown in each allocation-map figure (GenEval: one per task family; others: the first test prompts)."""


MAP_VMAX = 4.0
"""One colour scale for every map figure: 0 … 4 × the uniform weight (the default w_max)."""


@task(cache_policy=NO_CACHE)
def map_figure(cfg: Config, variant: str, out: Path) -> Path | None:
    """Allocation maps across denoising steps of ``variant``'s first seed, over its images of
    test prompts of its training task, with each map's localisation on the core content where
    the task's reward can locate it (GenEval's detector, the OCR backend's text boxes)."""
    checkpoint = cfg.paths.checkpoints / f"{variant}-s{cfg.study.seeds[0]}"
    if not checkpoint.is_dir():
        return None
    variant_cfg = cfg.for_variant(variant)
    task = variant_cfg.rewards.task
    pipe = load_variant(pipeline_for(cfg.model, cfg.paths.base_model), checkpoint)
    records = test_records(cfg, task)
    if task == "geneval":
        records = [next(r for r in records if r["tag"] == tag)
                   for tag in ("two_object", "position", "color_attr", "colors")]
    picked = records[:MAP_PROMPTS]
    reward = build_reward(cfg.rewards.for_task(task), cfg.paths.reward_models)
    images, maps, scores = model_allocation_maps(pipe, picked, variant_cfg.train, cfg.eval.seed, reward)
    steps = sorted({0, variant_cfg.train.steps // 3, 2 * variant_cfg.train.steps // 3, variant_cfg.train.steps - 1})
    located = {"geneval": "the detected objects", "ocr": "the text the OCR reads"}.get(task)
    where = f"; loc. = weight share on {located} / their area share" if located else ""
    title = f"{variant}: allocation weights (colour 0 … {MAP_VMAX:g}{where})"
    return allocation_overlay(images, maps, steps, [r["prompt"] for r in picked], out / f"maps_{variant}.png",
                              scores, MAP_VMAX, title)


SIDE_BY_SIDE_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""The side-by-side grid shows the first test prompt of each GenEval task."""


def side_by_side_plan(records: list[dict[str, Any]], scores: Any, cfg: Config, checkpoints: list[str]
                      ) -> tuple[list[str], list[int], dict[str, list[bool]]]:
    """The grid's prompts, their evaluation noise 0 seeds (``star.evaluation.evaluate.noise_seeds``), and
    per checkpoint whether the evaluation counted each of those images correct (strict GenEval)."""
    picked = [next(i for i, r in enumerate(records) if r["tag"] == tag)
              for tag in SIDE_BY_SIDE_TAGS if any(r["tag"] == tag for r in records)]
    seed_of = {(noise, index): seed for noise, index, seed in noise_seeds(len(records), cfg.eval)}
    geneval = scores[(scores.task == "geneval") & (scores.noise == 0)]
    correct = {}
    for checkpoint in checkpoints:
        variant, seed = split_checkpoint(checkpoint)
        rows = geneval[(geneval.variant == variant) & (geneval.seed == (seed or 0))]
        by_prompt = dict(zip(rows.prompt_index, rows.correct))
        correct[checkpoint] = [bool(by_prompt[i]) for i in picked]
    return [records[i]["prompt"] for i in picked], [seed_of[(0, i)] for i in picked], correct


@task(cache_policy=NO_CACHE)
def side_by_side(cfg: Config, variants: list[str], scores: Any, out: Path) -> Path:
    """The base and each of ``variants``' first seed on the same GenEval test prompts and noises
    (the evaluation's noise 0), one column each, marked as the evaluation scored them."""
    checkpoints = ["base", *(f"{v}-s{cfg.study.seeds[0]}" for v in variants
                             if (cfg.paths.checkpoints / f"{v}-s{cfg.study.seeds[0]}").is_dir())]
    prompts, seeds, correct = side_by_side_plan(test_records(cfg, "geneval"), scores, cfg, checkpoints)
    columns = {}
    for checkpoint in checkpoints:
        pipe = pipeline_for(cfg.model, cfg.paths.base_model)
        if checkpoint != "base":
            load_variant(pipe, cfg.paths.checkpoints / checkpoint)
        columns[checkpoint] = sample_ode(pipe, prompts, seeds, cfg.eval.steps, cfg.eval.guidance_scale)
    title = ("Same prompts and noises: the first GenEval test prompt of each task at evaluation noise 0 "
             "(✓/✗: strict GenEval, as evaluated)")
    return comparison_grid(columns, prompts, correct, out / "side_by_side.png", title)


def stamp(cfg: Config) -> str:
    """What produced the page: the params hash, the git commit (with a mark if the tree had
    uncommitted changes) and the date."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # the studies' own outputs change during `dvc repro` (this study's and, in a run of both, the
    # other's); only edited sources make the tree dirty
    roots = [study.root for study in cfg.studies.values() if study.root is not None]
    outputs = [":!dvc.lock", *(f":!{path}" for path in (cfg.paths.metrics, cfg.paths.reports, *roots))]
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs)
    dirty = " (uncommitted changes)" if changes else ""
    sections = list(Config.model_fields)
    return (f"params hash {fingerprint(cfg, sections)} · commit {commit}{dirty} · "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}")


def reference_description(section: Section) -> str:
    """What a section's reference is, for the report's notes (``study_sections`` chose it)."""
    if section.reference_is_flow_grpo:
        return "Flow-GRPO on this task's reward"
    return "the first variant: this task has no Flow-GRPO variant"


def section_report(cfg: Config, section: Section, scores: Any, out: Path) -> tuple[str, HtmlSection]:
    """One training task's part of the report: its variants against their Flow-GRPO variant and
    the base (table with intervals, difference figures), per-task details, curves and maps."""
    seeds, eval_dir, train_dir = cfg.study.seeds, cfg.paths.metrics / "eval", cfg.paths.metrics / "train"
    checkpoints = expected_checkpoints(section.variants, seeds)
    reference = section.reference
    reference_is = reference_description(section)
    comparison = compare(scores, cfg.study.eval_tasks, section.variants, cfg.eval.bootstrap, section.reference)
    held_out = comparison_table(comparison, reference)
    details = markdown_table(collect_rows(eval_dir, train_dir, checkpoints))
    name = TASK_NAMES[section.task].removesuffix(" acc.")
    figures = [(f"Held-out difference against {ref} (paired by prompt and noise)",
                plot_differences(comparison, column, ref, out / f"{section.task}_difference_vs_{suffix}.png",
                                 f"trained on {name}: "))
               for column, ref, suffix in (("vs reference", reference, "reference"), ("vs base", "base", "base"))
               if column == "vs base" or len(section.variants) > 1]
    if section.task == "geneval" and "geneval" in cfg.study.eval_tasks:
        figures.append(("Checkpoints side by side", side_by_side(cfg, section.variants, scores, out)))
    figures.append(("Training reward", plot_curves(train_dir, checkpoints, section.variants,
                                                   out / f"{section.task}_reward_curves.png")))
    capturing = [v for v in section.variants
                 if cfg.for_variant(v).train.allocation in ("star", "spatial", "shuffled", "oracle")]
    figures += [(f"Allocation maps of {v} across denoising steps", p)
                for v, p in ((v, map_figure(cfg, v, out)) for v in capturing) if p is not None]
    ci_note = (f"Mean over the test prompts × {cfg.eval.noises} noises [95 % bootstrap interval, {cfg.eval.bootstrap} "
               "resamples of prompts within each GenEval task and of seeds]; Δ: paired difference; ✓: the interval "
               f"excludes 0 (resolved). Reference: {reference} ({reference_is}).")
    notes = ("GenEval: strict accuracy (mean of six tasks); OCR NED: mean normalised edit distance (lower is better); "
             "train reward: mean of the first and last 10 % of iterations (of this section's training reward); map "
             "loc.: allocation weight on the located core content over its area share (1 = none).")
    pairs = [(a, b) for a, b in cfg.study.contrasts if a in section.variants and b in section.variants]
    control = next((v for v in section.variants if cfg.for_variant(v).train.allocation == "oracle"), None)
    power = learning_and_power(scores, training_curves(train_dir, checkpoints), section.task, HEADLINE[section.task],
                               section.variants, section.reference, pairs, cfg.eval.target_difference, control)
    power_note = (f"Differences paired by seed: per seed the tag-balanced mean over the prompts × noises, a − b "
                  f"seed by seed, Student-t 95 % interval over the {len(seeds)} seeds (the base is one checkpoint, "
                  "every seed's reference); ✓: resolved. MDD: the smallest true difference the design detects with "
                  "80 % power, from the observed spread of the per-seed differences; the last column: the seeds "
                  f"that spread needs for an MDD of {cfg.eval.target_difference:g}. Training pool: the prompts the "
                  f"variants train on, {cfg.eval.pool_noises} fixed noises each, the evaluation sampler, the training "
                  "reward (partial credit). Share of the control's gain: (variant − reference) / (oracle − reference), "
                  "mean over seeds, with Fieller's 95 % interval from the same per-seed gains.")
    heading = f"Trained on {name}: {', '.join(section.variants)}"
    markdown = (f"## {heading}\n\n### Learning and power (paired by seed)\n\n{power}\n{power_note}\n\n"
                f"### Held-out scores\n\n{held_out}\n{ci_note}\n\n"
                f"### Per GenEval task and training\n\n{details}\n")
    return markdown, (heading, [*power_tables(power, power_note), ("Held-out scores", held_out, ci_note),
                                ("Per GenEval task and training", details, notes)],
                      figures)


def power_tables(markdown: str, note: str) -> list[tuple[str, str, str]]:
    """The learning-and-power markdown as the HTML page's tables (one per measure), the note under the last."""
    tables = [part for part in markdown.split("\n\n") if part.strip()]
    return [(table.split("|")[1].strip(), table, note if i == len(tables) - 1 else "")
            for i, table in enumerate(tables)]


def best_checkpoint(scores: pd.DataFrame, section: Section) -> tuple[str, int, float] | None:
    """(variant, seed, held-out score) of the section's checkpoint with the highest held-out
    headline score on its task (tag-balanced, as the report's tables), or None without scores."""
    table = seed_scores(scores, section.task, HEADLINE[section.task])
    table = table[[v for v in section.variants if v in table]]
    if table.empty or table.isna().all().all():
        return None
    seed, variant = table.stack().idxmax()
    return str(variant), int(seed), float(table.loc[seed, variant])


def register_best(cfg: Config, section: Section, scores: pd.DataFrame) -> None:
    """Register the section's best checkpoint in the Model Registry as ``<experiment>-<task>-best``
    (a new version each report), its held-out score and its variant's knobs as tags."""
    best = best_checkpoint(scores, section)
    if best is None:
        return
    variant, seed, score = best
    train = cfg.for_variant(variant).train
    version = register_checkpoint(
        cfg, variant, seed, f"{experiment_name(cfg)}-{section.task}-best",
        {HEADLINE[section.task]: f"{score:.4f}", "algorithm": train.algorithm, "allocation": train.allocation},
    )
    if version is None:
        get_run_logger().warning("%s-s%d: no finished training run logged its model; nothing registered",
                                 variant, seed)


@flow(name="report")
def report(params: str = "params.yaml", overrides: dict[str, Any] | None = None, study: str = "default") -> Path:
    cfg = stage_config(params, overrides).for_study(study)
    out = cfg.paths.reports
    out.mkdir(parents=True, exist_ok=True)
    eval_dir, train_dir = cfg.paths.metrics / "eval", cfg.paths.metrics / "train"
    checkpoints = expected_checkpoints(list(cfg.study.variants), cfg.study.seeds)
    scores = load_scores(eval_dir, checkpoints)
    sections = study_sections(cfg)
    pages = [section_report(cfg, section, scores, out) for section in sections]
    with atomic_file(out / "training_curves.csv") as partial:  # `dvc plots show`
        training_curves(train_dir, checkpoints).to_csv(partial, index=False)
    tasks = ", ".join(TASK_NAMES[s.task].removesuffix(" acc.") for s in sections)
    title = f"STAR study: trained on {tasks}; {len(cfg.study.seeds)} seed(s)"
    page_stamp = stamp(cfg)
    write_text(out / "table.md", f"# {title}\n\n{page_stamp}\n\n" + "\n".join(md for md, _ in pages))
    write_text(out / "report.html", html_page(title, page_stamp, [page for _, page in pages]))
    summary = study_summary(scores, sections, cfg.study_name)  # `dvc exp show`'s columns
    write_text(cfg.paths.metrics / "study.json", json.dumps(summary, indent=2) + "\n")
    with stage_run(cfg, "report", ["study"], tags={"variant": "all"}):  # stage_run tags the study
        for path in [out / "table.md", out / "report.html", *(p for _, (_, _, figures) in pages for _, p in figures)]:
            mlflow.log_artifact(str(path), "report")
        for section in sections:
            register_best(cfg, section, scores)
    get_run_logger().info("report written to %s\n%s", out, (out / "table.md").read_text())
    return out


if __name__ == "__main__":
    stage_main("report")
