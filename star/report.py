"""The study report: a comparison table (markdown + self-contained HTML), reward curves and
allocation-map figures, from the metrics files the stages wrote."""

from __future__ import annotations

import base64
import csv
import html
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

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


def split_checkpoint(name: str) -> tuple[str, int | None]:
    """'star-s0' -> ('star', 0); 'base' -> ('base', None)."""
    variant, sep, seed = name.rpartition("-s")
    return (variant, int(seed)) if sep and seed.isdigit() else (name, None)


def collect_rows(eval_dir: Path, train_dir: Path, order: list[str]) -> list[Row]:
    """Rows from metrics/eval/<checkpoint>.json and metrics/train/<checkpoint>.json, base first,
    then variants in ``order``."""
    rows: dict[str, Row] = {}
    for path in sorted(eval_dir.glob("*.json")):
        variant, _ = split_checkpoint(path.stem)
        row = rows.setdefault(variant, Row(variant, {}))
        metrics = json.loads(path.read_text())
        train = train_dir / path.name
        if train.is_file():
            metrics |= json.loads(train.read_text())
        for key, value in metrics.items():
            row.values.setdefault(key, []).append(float(value))
    rank = {name: i for i, name in enumerate(["base", *order])}
    return sorted(rows.values(), key=lambda r: (rank.get(r.variant, len(rank)), r.variant))


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


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the raw curves of small groups are noisy)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_curves(train_dir: Path, order: list[str], path: Path, window: int = 5) -> Path:
    """Training reward per iteration: one line per variant (mean over seeds), raw seeds faint."""
    by_variant: dict[str, list[tuple[list[int], list[float]]]] = {}
    for csv_path in sorted(train_dir.glob("*.csv")):
        variant, _ = split_checkpoint(csv_path.stem)
        by_variant.setdefault(variant, []).append(read_curve(csv_path))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for index, variant in enumerate(sorted(by_variant, key=lambda v: order.index(v) if v in order else len(order))):
        colour = f"C{index}"
        curves = by_variant[variant]
        length = min(len(c[1]) for c in curves)
        mean = [statistics.fmean(c[1][i] for c in curves) for i in range(length)]
        for steps, values in curves:
            ax.plot(steps, values, color=colour, alpha=0.15, linewidth=0.8)
        ax.plot(curves[0][0][:length], smooth(mean, window), color=colour, label=f"{variant} (n={len(curves)})")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training reward (moving average of {window})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def html_page(title: str, table_markdown: str, figures: list[Path], notes: str = "") -> str:
    """A self-contained page: the table as HTML and every figure inlined as base64 PNG."""
    lines = [line for line in table_markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>"
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}")
    figures_html = "".join(f"<h2>{html.escape(p.stem)}</h2>{_embed(p)}" for p in figures if p.is_file())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{table}<p>{html.escape(notes)}</p>"
            f"{figures_html}</body></html>")
