"""The study report: a comparison table (markdown + self-contained HTML), reward curves and
allocation-map figures, from the metrics files the stages wrote."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from star.config import DEFAULT_STUDY, Config
from star.evaluation.evaluate import HEADLINE
from star.evaluation.figures import save_figure
from star.evaluation.paired import seed_scores
from star.evaluation.stats import Estimate, ScoreMatrix, bootstrap

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS: dict[str, str] = {
    "geneval_overall": "GenEval",
    "geneval_single_object": "single",
    "geneval_two_object": "two obj.",
    "geneval_counting": "counting",
    "geneval_colors": "colors",
    "geneval_position": "position",
    "geneval_color_attr": "attr.",
    "ocr_accuracy": "OCR acc.",
    "ocr_edit_distance": "OCR NED ↓",
    "pickscore_mean": "PickScore",
    "reward_start": "train reward start",
    "reward_end": "train reward end",
    "localisation": "map loc.",
}
"""Metric key -> column header, in table order (missing metrics are left blank)."""
TASK_NAMES: dict[str, str] = {"geneval": "GenEval", "ocr": "OCR acc.", "pickscore": "PickScore"}
"""Each task's headline (star.evaluation.evaluate.HEADLINE's prompt means) as a column title."""


@dataclass
class Row:
    """One variant: metric -> values over seeds."""

    variant: str
    values: dict[str, list[float]]

    def cell(self, key: str) -> str:
        values = self.values.get(key, [])
        if not values:
            return ""
        mean = statistics.fmean(values)
        if len(values) == 1:
            return f"{mean:.3f}"
        return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


@dataclass
class Section:
    """The study's variants trained on one task (``rewards.task``), compared with ``reference``:
    the first of them that is Flow-GRPO on the task's own reward (``reference_is_flow_grpo``),
    else the first variant."""

    task: str
    variants: list[str]
    reference: str
    reference_is_flow_grpo: bool


def is_flow_grpo(cfg: Config, reward: Config) -> bool:
    """Whether a variant's config is the Flow-GRPO baseline of a section whose first variant has
    the config ``reward``: GRPO, allocation `none`, trained on the same reward (task and mix)."""
    return cfg.train.algorithm == "grpo" and cfg.train.allocation == "none" and cfg.rewards == reward.rewards


def study_sections(cfg: Config) -> list[Section]:
    """``cfg.study.variants`` grouped by training task, tasks and variants in params order; each
    section's reference is its Flow-GRPO variant (on the reward of the section's first variant),
    else its first variant."""
    configs = {variant: cfg.for_variant(variant) for variant in cfg.study.variants}
    groups: dict[str, list[str]] = {}
    for variant, variant_cfg in configs.items():
        groups.setdefault(variant_cfg.rewards.task, []).append(variant)
    sections = []
    for task, variants in groups.items():
        flow_grpo = next((v for v in variants if is_flow_grpo(configs[v], configs[variants[0]])), None)
        sections.append(Section(task, variants, flow_grpo or variants[0], flow_grpo is not None))
    return sections


def study_summary(scores: pd.DataFrame, sections: list[Section], study: str) -> dict[str, Any]:
    """The held-out headline score of the base and of each variant on its section's task, mean
    over seeds (tag-balanced, as the tables): ``{task: {"base": s, variant: s, ...}}``, nested
    under ``study`` unless it is the default study: every key stays unique across the project's
    metrics files, so that `dvc exp show` names its columns by the key alone (``geneval.nft``)."""
    summary: dict[str, Any] = {}
    for section in sections:
        means = seed_scores(scores, section.task, HEADLINE[section.task]).mean()
        present = [v for v in ["base", *section.variants] if v in means and not math.isnan(means[v])]
        summary[section.task] = {variant: round(float(means[variant]), 4) for variant in present}
    return summary if study == DEFAULT_STUDY else {study: summary}


def split_checkpoint(name: str) -> tuple[str, int | None]:
    """'star-s0' -> ('star', 0); 'base' -> ('base', None)."""
    variant, sep, seed = name.rpartition("-s")
    return (variant, int(seed)) if sep and seed.isdigit() else (name, None)


def expected_checkpoints(variants: list[str], seeds: list[int]) -> list[str]:
    """The checkpoints a study evaluates: the base, then every variant × seed (the report's
    DVC dependencies; nothing else in ``metrics/`` is read)."""
    return ["base", *(f"{variant}-s{seed}" for variant in variants for seed in seeds)]


def _existing(paths: list[Path]) -> list[Path]:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the report needs files the study's stages write; missing: {', '.join(missing)}")
    return paths


def collect_rows(eval_dir: Path, train_dir: Path, checkpoints: list[str]) -> list[Row]:
    """Rows from metrics/eval/<checkpoint>.json and metrics/train/<checkpoint>.json of the given
    checkpoints, in their order (one row per variant, values over seeds)."""
    rows: dict[str, Row] = {}
    for path in _existing([eval_dir / f"{c}.json" for c in checkpoints]):
        variant, _ = split_checkpoint(path.stem)
        row = rows.setdefault(variant, Row(variant, {}))
        metrics = json.loads(path.read_text())
        train = train_dir / path.name
        if train.is_file():
            metrics |= json.loads(train.read_text())
        for key, value in metrics.items():
            row.values.setdefault(key, []).append(float(value))
    return list(rows.values())


def load_scores(eval_dir: Path, checkpoints: list[str]) -> pd.DataFrame:
    """Every (checkpoint, task, prompt, noise) score, with ``variant`` and ``seed`` columns
    (the base is seed 0)."""
    frames = []
    for checkpoint, path in zip(checkpoints, _existing([eval_dir / f"{c}.scores.csv" for c in checkpoints])):
        variant, seed = split_checkpoint(checkpoint)
        frame = pd.read_csv(path)
        frames.append(frame.assign(tag=frame["tag"].fillna("").astype(str), variant=variant, seed=seed or 0))
    return pd.concat(frames, ignore_index=True)


def compare(
    scores: pd.DataFrame, tasks: list[str], variants: list[str], resamples: int, reference: str | None = "none"
) -> pd.DataFrame:
    """Per task and row (base, then variants): the headline with its 95 % interval, and the
    paired differences against ``reference`` (the section's Flow-GRPO variant) and against the
    base (star/evaluation/stats.py), in columns ``vs reference`` and ``vs base``."""
    records = []
    for task in tasks:
        column = HEADLINE[task]
        by_variant = {v: ScoreMatrix.from_rows(frame, column)
                      for v, frame in scores[scores.task == task].groupby("variant", sort=False)}
        for variant in ["base", *variants]:
            if variant not in by_variant:
                continue
            matrix = by_variant[variant]
            record = {"task": task, "variant": variant, "seeds": len(matrix.values),
                      "value": bootstrap(matrix, resamples=resamples)}
            for column, other in (("vs reference", reference), ("vs base", "base")):
                if other in by_variant and other != variant:
                    record[column] = bootstrap(matrix, by_variant[other], resamples=resamples)
            records.append(record)
    return pd.DataFrame(records)


def _cell(value: object, difference: bool = True) -> str:
    """An estimate with its interval; a difference whose interval excludes 0 gets a ✓."""
    if not isinstance(value, Estimate):
        return ""
    return value.text() + (" ✓" if difference and value.resolved else "")


def comparison_table(comparison: pd.DataFrame, reference: str = "none") -> str:
    """Markdown: one row per variant; per task its headline [95 % CI] and the differences
    against ``reference`` and the base, ✓ where the interval excludes 0."""
    tasks = list(dict.fromkeys(comparison.task))
    parts = ("", f" Δ vs {reference}", " Δ vs base")
    header = ["variant", "seeds"] + [f"{TASK_NAMES[t]}{part}" for t in tasks for part in parts]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (3 * len(tasks))]
    for variant, rows in comparison.groupby("variant", sort=False):
        by_task = {row["task"]: row for row in rows.to_dict("records")}
        cells = [str(variant), str(rows.seeds.iloc[0])]
        for task in tasks:
            row = by_task.get(task, {})
            cells += [_cell(row.get("value"), difference=False), _cell(row.get("vs reference")),
                      _cell(row.get("vs base"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_differences(comparison: pd.DataFrame, column: str, reference: str, path: Path, title: str = "") -> Path:
    """One panel per task: each row's paired difference in ``column`` ('vs reference' or 'vs
    base'; ``reference`` names it) with its 95 % interval; filled markers where it excludes 0."""
    tasks = list(dict.fromkeys(comparison.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in comparison[comparison.task == task].to_dict("records")
                if isinstance(r.get(column), Estimate)]
        for y, row in enumerate(rows):
            est: Estimate = row[column]
            ax.errorbar(est.mean, y, xerr=[[est.mean - est.low], [est.high - est.mean]], fmt="o", color=f"C{y}",
                        markerfacecolor=f"C{y}" if est.resolved else "white", capsize=4)
        ax.axvline(0, color="grey", linewidth=1)
        ax.set_yticks(range(len(rows)), [r["variant"] for r in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.invert_yaxis()
        ax.set_title(f"{TASK_NAMES[task]}: difference vs {reference}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{title}paired difference, 95 % bootstrap interval\nover prompts (and seeds); filled: excludes 0",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def markdown_table(rows: list[Row]) -> str:
    keys = [k for k in COLUMNS if any(k in r.values for r in rows)]
    seeds = max((len(next(iter(r.values.values()), [])) for r in rows), default=0)
    lines = [
        "| variant | " + " | ".join(COLUMNS[k] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    lines += [f"| {r.variant} | " + " | ".join(r.cell(k) for k in keys) + " |" for r in rows]
    note = f"\nMean ± std over seeds (up to {seeds} per variant); a single seed shows its value." if seeds else ""
    return "\n".join(lines) + "\n" + note + "\n"


def read_curve(path: Path) -> tuple[list[int], list[float]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return [int(r["iteration"]) for r in rows], [float(r["reward_mean"]) for r in rows]


def training_curves(train_dir: Path, checkpoints: list[str]) -> pd.DataFrame:
    """Every trained checkpoint's per-iteration curve in one long table (columns ``run``,
    ``variant``, ``seed`` and the training CSV's), the data of DVC's overlaid plots."""
    frames = []
    for name in checkpoints:
        path = train_dir / f"{name}.csv"
        if name != "base" and path.is_file():
            variant, seed = split_checkpoint(name)
            frames.append(pd.read_csv(path).assign(run=name, variant=variant, seed=seed))
    if not frames:
        return pd.DataFrame(columns=["run", "variant", "seed", "iteration"])
    curves = pd.concat(frames, ignore_index=True)
    # the allocating variants' map localisation averaged over the trained steps (empty for the others)
    curves["localisation"] = curves[[c for c in curves.columns if c.startswith("localisation_t")]].mean(axis=1)
    return curves[["run", "variant", "seed", *[c for c in curves.columns if c not in ("run", "variant", "seed")]]]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the raw curves of small groups are noisy)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_curves(train_dir: Path, checkpoints: list[str], order: list[str], path: Path, window: int = 5) -> Path:
    """Training reward per iteration of the given checkpoints: per variant the mean over seeds
    (moving average) with a band of ± one standard deviation over seeds."""
    by_variant: dict[str, list[tuple[list[int], list[float]]]] = {}
    for name in checkpoints:
        if name != "base":
            by_variant.setdefault(split_checkpoint(name)[0], []).append(
                read_curve(_existing([train_dir / f"{name}.csv"])[0]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for index, variant in enumerate(sorted(by_variant, key=lambda v: order.index(v) if v in order else len(order))):
        colour = f"C{index}"
        curves = by_variant[variant]
        length = min(len(c[1]) for c in curves)
        runs = [smooth(c[1][:length], window) for c in curves]
        steps = curves[0][0][:length]
        mean = [statistics.fmean(r[i] for r in runs) for i in range(length)]
        ax.plot(steps, mean, color=colour, label=f"{variant} ({len(curves)} seed{'s' * (len(curves) > 1)})")
        if len(runs) > 1:
            spread = [statistics.stdev(r[i] for r in runs) for i in range(length)]
            ax.fill_between(steps, [m - d for m, d in zip(mean, spread)], [m + d for m, d in zip(mean, spread)],
                            color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training reward (moving average of {window})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _html_table(markdown: str) -> str:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    return table + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                           for row in body) + "</table>"


HtmlSection = tuple[str, list[tuple[str, str, str]], list[tuple[str, Path]]]
"""A report section: heading, tables as (heading, markdown table, note), figures as (caption, PNG)."""


def html_page(title: str, stamp: str, sections: list[HtmlSection]) -> str:
    """A self-contained page of ``sections`` (figures inlined as base64 PNGs) under a stamp
    saying what produced it."""
    style = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
             ".stamp{color:#555;font-size:90%}h2{border-bottom:2px solid #333;margin-top:2em}")
    parts = [f"<h1>{html.escape(title)}</h1><p class='stamp'>{html.escape(stamp)}</p>"]
    for section, tables, figures in sections:
        parts.append(f"<h2>{html.escape(section)}</h2>")
        for heading, markdown, note in tables:
            parts.append(f"<h3>{html.escape(heading)}</h3>{_html_table(markdown)}<p>{html.escape(note)}</p>")
        parts += [f"<h3>{html.escape(caption)}</h3>{_embed(path)}" for caption, path in figures if path.is_file()]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
