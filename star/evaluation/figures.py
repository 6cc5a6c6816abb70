"""Pictures people look at: sample grids with their prompts."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from star.files import atomic_file  # noqa: E402


def save_figure(fig: Any, path: Path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (a PNG) through ``star.files.atomic_file`` and close it: a
    failed write raises ``WriteError`` naming ``path`` and its cause, and keeps an earlier file."""
    try:
        with atomic_file(path) as partial:
            fig.savefig(partial, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def sample_grid(
    images: torch.Tensor,
    prompts: list[str],
    path: Path,
    columns: int = 4,
    marks: list[bool] | None = None,
    title: str | None = None,
) -> Path:
    """Save a captioned grid of (N, 3, H, W) images in [0, 1] as a PNG; ✓/✗ from ``marks``."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.6 * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= count:
            continue
        ax.imshow(images[index].permute(1, 2, 0).float().clamp(0, 1).numpy(), interpolation="nearest")
        caption = "\n".join(textwrap.wrap(prompts[index], 26))
        if marks is not None:
            caption = ("✓ " if marks[index] else "✗ ") + caption
            ax.title.set_color("darkgreen" if marks[index] else "firebrick")
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def allocation_overlay(
    images: torch.Tensor,
    maps: torch.Tensor,
    steps: list[int],
    prompts: list[str],
    path: Path,
    localisation: torch.Tensor | None = None,
    vmax: float | None = None,
    title: str | None = None,
) -> Path:
    """Save each (N, 3, H, W) image beside its allocation maps at ``steps`` drawn over it.

    maps: (N, T, P) with P a square patch grid; each map is upsampled to the image with nearest
    neighbours and shown on one colour scale from 0 to ``vmax`` (default: the largest weight
    shown; 1 = the uniform allocation). localisation: (N, T) scores printed under each map.
    """
    count, side = len(images), int(round(maps.shape[-1] ** 0.5))
    vmax = float(maps[:, steps].max()) if vmax is None else vmax
    fig, axes = plt.subplots(count, len(steps) + 1, figsize=(1.9 * (len(steps) + 1), 2.0 * count), squeeze=False)
    for row in range(count):
        picture = images[row].permute(1, 2, 0).float().clamp(0, 1).numpy()
        extent = (0, picture.shape[1], picture.shape[0], 0)
        axes[row, 0].imshow(picture, interpolation="nearest")
        axes[row, 0].set_title("\n".join(textwrap.wrap(prompts[row], 24)), fontsize=6)
        for column, step in enumerate(steps, start=1):
            ax = axes[row, column]
            ax.imshow(picture, interpolation="nearest")
            grid = maps[row, step].reshape(side, side).float().numpy()
            shown = ax.imshow(grid, cmap="magma", alpha=0.6, vmin=0, vmax=vmax, extent=extent, interpolation="nearest")
            label = f"step {step}"
            if localisation is not None and localisation[row, step] == localisation[row, step]:
                label += f"\nloc. {float(localisation[row, step]):.2f}"
            ax.set_title(label, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, label="allocation weight")
    return save_figure(fig, path, dpi=110)


def report_grid(report: Any, side: int, path: Path, title: str) -> Path:
    """A ``side`` x ``side`` grid of evenly spaced prompts of an evaluation ``TaskReport``, each
    with its first noise (so every checkpoint's grid shows the same prompts and noises)."""
    count = len(report.prompts) // report.noises
    shown = torch.linspace(0, count - 1, min(count, side * side)).long().tolist()
    marks = [report.marks[i] for i in shown] if report.marks is not None else None
    return sample_grid(report.images[shown], [report.prompts[i] for i in shown], path, columns=side, marks=marks,
                       title=title)


def comparison_grid(
    columns: dict[str, torch.Tensor], prompts: list[str], correct: dict[str, list[bool]], path: Path, title: str
) -> Path:
    """Checkpoints side by side: one row per prompt, one column per checkpoint (``columns``
    name -> (N, 3, H, W) images in [0, 1], all from the same prompts and noises); each image
    captioned ✓/✗ by ``correct`` (name -> N flags)."""
    names, count = list(columns), len(prompts)
    fig, axes = plt.subplots(count, len(names) + 1, figsize=(1.6 * (len(names) + 1.6), 1.7 * count), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6] + [1] * len(names)})
    for row in range(count):
        axes[row, 0].text(1, 0.5, "\n".join(textwrap.wrap(prompts[row], 28)), ha="right", va="center", fontsize=7,
                          transform=axes[row, 0].transAxes)
        for column, name in enumerate(names, start=1):
            ax = axes[row, column]
            ax.imshow(columns[name][row].permute(1, 2, 0).float().clamp(0, 1).numpy(), interpolation="nearest")
            ok = correct[name][row]
            ax.set_title(("✓ " if ok else "✗ ") + (name if row == 0 else ""), fontsize=7,
                         color="darkgreen" if ok else "firebrick")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("\n".join(textwrap.wrap(title, int(14 * (len(names) + 1.6)))), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
