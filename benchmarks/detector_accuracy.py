"""Accuracy of the shapes-world detector on rendered scenes, as a markdown table.

Usage: ``python benchmarks/detector_accuracy.py [--n 2000] [--sizes 32 64 128] [--seed 0]
[--degrade] [--cell 10]``. Each scene has 1-4 random objects (random shapes and colours; with
``--cell``, one per grid cell as ``world.layout_cell`` lays them out); detections with a score
>= 0.3 (GenEval's threshold) are matched to ground-truth objects by box IoU >= 0.5.
``--degrade`` also measures Gaussian-blurred, noisy copies of the same scenes (a stand-in for
model samples) at two strengths (``DEGRADATIONS``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.detection import Detection  # noqa: E402
from star.world.detector import detect  # noqa: E402
from star.world.render import Layout, ObjectSpec, Scene, render_array, sample_scene  # noqa: E402
from star.world.vocab import COLOR_NAMES, SHAPES  # noqa: E402

SCORE_THRESHOLD = 0.3
MATCH_IOU = 0.5


@dataclass
class Tally:
    """Running counts over scenes."""

    objects: int = 0
    detections: int = 0
    matched: int = 0
    class_ok: int = 0
    color_ok: int = 0
    seconds: float = 0.0
    images: int = 0

    def row(self, label: str) -> str:
        m = max(self.matched, 1)
        return (
            f"| {label} | {self.images} | {self.objects} | {self.class_ok / m:.4f} | {self.color_ok / m:.4f} "
            f"| {self.matched / max(self.objects, 1):.4f} | {self.matched / max(self.detections, 1):.4f} "
            f"| {1000 * self.seconds / max(self.images, 1):.2f} |"
        )


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(objects: tuple[ObjectSpec, ...], detections: list[Detection]) -> list[tuple[ObjectSpec, Detection]]:
    """Greedy one-to-one matching of ground truth to detections by box IoU >= MATCH_IOU."""
    pairs = sorted(
        ((box_iou(o.box, d.box), i, j) for i, o in enumerate(objects) for j, d in enumerate(detections)),
        reverse=True,
    )
    used_o: set[int] = set()
    used_d: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if iou < MATCH_IOU or i in used_o or j in used_d:
            continue
        used_o.add(i)
        used_d.add(j)
        out.append((objects[i], detections[j]))
    return out


def random_scene(rng: np.random.Generator, image_size: int, cell: int = 0) -> Scene:
    """1-4 objects with uniformly random shapes and colours (``cell``: ``world.layout_cell``)."""
    n = int(rng.integers(1, 5))
    specs = [(SHAPES[rng.integers(len(SHAPES))], COLOR_NAMES[rng.integers(len(COLOR_NAMES))]) for _ in range(n)]
    return sample_scene(rng, specs, image_size, layout=Layout(cell))


def degrade(pixels: np.ndarray, rng: np.random.Generator, blur: float = 0.7, noise: float = 8.0) -> np.ndarray:
    """Gaussian blur (sigma ``blur`` px) plus Gaussian noise (sigma ``noise`` levels), (H, W, 3) uint8."""
    soft = ndimage.gaussian_filter(pixels.astype(np.float32), sigma=(blur, blur, 0))
    return np.clip(soft + rng.normal(0.0, noise, soft.shape), 0, 255).astype(np.uint8)


DEGRADATIONS: dict[str, tuple[float, float]] = {"clean": (0.0, 0.0), "mild": (0.7, 8.0), "strong": (1.0, 16.0)}
"""Name -> (blur sigma px, noise sigma in 0-255 levels)."""


def measure(n: int, image_size: int, seed: int, degradation: str = "clean", cell: int = 0) -> Tally:
    """Tally detector results on ``n`` random scenes of one size (same scenes for every level)."""
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng(seed + 1)
    blur, noise = DEGRADATIONS[degradation]
    detect(render_array(Scene((), image_size=image_size)))  # builds the colour table: not timed
    tally = Tally()
    for _ in range(n):
        scene = random_scene(rng, image_size, cell)
        pixels = render_array(scene)
        if degradation != "clean":
            pixels = degrade(pixels, noise_rng, blur, noise)
        start = time.perf_counter()
        found = [d for d in detect(pixels) if d.score >= SCORE_THRESHOLD]
        tally.seconds += time.perf_counter() - start
        tally.images += 1
        pairs = match(scene.objects, found)
        tally.objects += len(scene.objects)
        tally.detections += len(found)
        tally.matched += len(pairs)
        tally.class_ok += sum(o.shape == d.class_name for o, d in pairs)
        tally.color_ok += sum(o.color == d.color for o, d in pairs)
    return tally


def render_ms(image_size: int, n: int = 500, seed: int = 0, cell: int = 0) -> tuple[float, float]:
    """Mean milliseconds to (lay out, render) one random 1-4 object scene."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    scenes = [random_scene(rng, image_size, cell) for _ in range(n)]
    layout = time.perf_counter() - start
    start = time.perf_counter()
    for scene in scenes:
        render_array(scene)
    return 1000 * layout / n, 1000 * (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="scenes per image size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--degrade", action="store_true", help="also measure blurred, noisy copies")
    parser.add_argument("--cell", type=int, default=0, help="objects one per cell of this many px (world.layout_cell)")
    args = parser.parse_args()
    levels = list(DEGRADATIONS) if args.degrade else ["clean"]
    print("| images | scenes | objects | class acc | colour acc | recall | precision | detect ms / image |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for level in levels:
            blur, noise = DEGRADATIONS[level]
            label = f"{size}px {level}" + (f" (blur {blur}, noise {noise:g})" if level != "clean" else "")
            print(measure(args.n, size, args.seed, level, args.cell).row(label), flush=True)
    print()
    print("| image size | layout ms / scene | render ms / scene |")
    print("|---|---|---|")
    for size in args.sizes:
        layout, render = render_ms(size, cell=args.cell)
        print(f"| {size} | {layout:.3f} | {render:.3f} |")


if __name__ == "__main__":
    main()
