"""Pictures people look at: sample grids with their prompts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
