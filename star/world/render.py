"""Deterministic renderer and layout samplers for the shapes world.

Images are flat: a grey background, shapes painted in exact palette colours (no anti-aliasing,
so every pixel of an object is its colour) and, for OCR scenes, a white sign with black text.
Boxes are ``(x0, y0, x1, y1)`` in integer pixels, y downwards, with ``x1``/``y1`` exclusive:
an object covers columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from star.world.vocab import BACKGROUND_RGB, COLORS, MAX_TEXT_LEN, SHAPES

if TYPE_CHECKING:  # annotations only
    from star.world.config import WorldConfig

Box = tuple[int, int, int, int]

MIN_GAP: int = 3
"""Pixels kept free between any two object boxes, so components of one colour never merge."""

MIN_OBJECT_SIZE: int = 10
"""Smallest default object side: below it a circle, a cross and a square blur into one another."""

RELATION_MARGIN: float = 0.2
"""Sampled relation layouts beat GenEval's 0.5 threshold by this much (e.g. dx < -0.7)."""

POSITION_SHRINK: float = 0.1
"""GenEval's shrink of the centre offset, as a fraction of the summed box sizes."""

SIGN_RGB: tuple[int, int, int] = COLORS["white"]
TEXT_RGB: tuple[int, int, int] = COLORS["black"]

# Cross arms ~1/3 of the box: >= 3 px wide from 9 px up (they survive the detector's 3x3
# erosion), yet thin enough that a small cross does not look like a small circle.
_CROSS_HALF_ARM = 0.17
_STAR_INNER_RATIO = 0.47  # fatter than the classic 0.38 so the points survive at ~10 px


@dataclass(frozen=True)
class Layout:
    """Where objects may sit: anywhere (``cell`` 0), or centred one per ``cell``-pixel cell of a
    grid, only in every ``stride``-th row and column of cells (the others stay background).

    With ``cell`` the transformer's token footprint, each object is one token; a ``stride`` of 2
    keeps the 4 x 4 lattice of places of a 4 x 4 token world on an 8 x 8 token grid."""

    cell: int = 0
    stride: int = 1
    text: Literal["free", "cells"] = "free"
    """Sign text: ``free`` (a sign anywhere, the font's own spacing) or ``cells`` (one character
    per ``TEXT_SLOT`` of cells, monospaced, the sign centred on the grid: ``cell_sign_box``)."""

    def __post_init__(self) -> None:
        if self.cell < 0 or self.stride < 1:
            raise ValueError(f"layout cell {self.cell} must be >= 0 and stride {self.stride} >= 1")
        if self.text == "cells" and not self.cell:
            raise ValueError("text 'cells' needs a layout cell (world.layout_cell > 0)")


FREE = Layout()
"""Objects anywhere in the image."""


def world_layout(world: WorldConfig) -> Layout:
    """The ``Layout`` of a ``WorldConfig`` (``layout_cell``, ``layout_stride``, ``text_layout``)."""
    return Layout(world.layout_cell, world.layout_stride, world.text_layout)


@dataclass(frozen=True)
class ObjectSpec:
    """One object: a world shape painted in one palette colour inside ``box``."""

    shape: str
    color: str
    box: Box


@dataclass(frozen=True)
class Scene:
    """A full image description.

    Attributes:
        objects: the shapes, painted in order.
        text: optional short string drawn in black on a white sign (OCR scenes).
        image_size: side of the square image in pixels.
        sign_box: where the sign goes; None centres a default sign (only used when ``text``).
        text_cell: 0: ``text`` in the font's own spacing, filling the sign; else the side of a
            grid cell: one character per ``TEXT_SLOT`` of cells from the sign's first slot.
    """

    objects: tuple[ObjectSpec, ...]
    text: str | None = None
    image_size: int = 64
    sign_box: Box | None = None
    text_cell: int = 0


_EPS = 1e-9  # pixel centres exactly on an edge count as inside, on both sides alike (symmetry)


def _star_polygon() -> tuple[np.ndarray, np.ndarray]:
    """A 5-point star (apex up) stretched to the unit box: ten vertices (10, 2) and its centre (2,)."""
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, _STAR_INNER_RATIO)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    low, span = pts.min(axis=0), pts.max(axis=0) - pts.min(axis=0)
    return (pts - low) / span, -low / span


def _convex_pieces() -> dict[str, list[np.ndarray]]:
    """Each polygonal shape as a union of convex polygons (K, 2); the star as a fan of triangles."""
    star, centre = _star_polygon()
    return {
        "triangle": [np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]])],
        "diamond": [np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5]])],
        "star": [np.stack([centre, star[i], star[(i + 1) % 10]]) for i in range(10)],
    }


def _inside_convex(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Points (u, v) inside or on the convex polygon ``poly`` (K, 2), either orientation."""
    edges = np.roll(poly, -1, axis=0) - poly
    area = np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
    inside = np.ones(np.broadcast(u, v).shape, dtype=bool)
    for (ua, va), (du, dv) in zip(poly, edges):
        cross = du * (v - va) - dv * (u - ua)
        inside &= np.sign(area) * cross >= -_EPS
    return inside


def _raw_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Mask, shape (height, width), of pixels whose centre lies in the shape scaled to the box.

    Pointed tips (triangle apex, star points) may miss every pixel centre of the outer rows or
    columns, so this mask can be smaller than its box; ``shape_mask`` fixes that.
    """
    v, u = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25 + _EPS
    if shape == "square":
        return np.ones((height, width), dtype=bool)
    if shape == "cross":
        return (np.abs(u - 0.5) <= _CROSS_HALF_ARM + _EPS) | (np.abs(v - 0.5) <= _CROSS_HALF_ARM + _EPS)
    inside = np.zeros((height, width), dtype=bool)
    for piece in _PIECES[shape]:
        inside |= _inside_convex(u, v, piece)
    return inside


_PIECES: dict[str, list[np.ndarray]] = _convex_pieces()


def _tight(mask: np.ndarray) -> np.ndarray:
    """``mask`` cropped to the bounding box of its True pixels (unchanged when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@functools.lru_cache(maxsize=16384)
def _fitted(shape: str, width: int, height: int) -> np.ndarray | None:
    """A rasterisation whose True pixels span exactly (height, width), or None if none is found.

    Searches boxes up to 4 px larger, smallest first, and crops the first whose tight extent
    matches: the tips then sit on the box edges.
    """
    grow = sorted(((dw, dh) for dw in range(5) for dh in range(5)), key=lambda d: (d[0] + d[1], d))
    for dw, dh in grow:
        mask = _tight(_raw_mask(shape, width + dw, height + dh))
        if mask.shape == (height, width):
            return mask
    return None


def fits_exactly(shape: str, width: int, height: int) -> bool:
    """Whether ``shape_mask(shape, width, height)`` touches all four edges of its box."""
    return min(width, height) < 3 or _fitted(shape, width, height) is not None


@functools.lru_cache(maxsize=16384)
def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Boolean mask, shape (height, width), of ``shape`` filling a box of that size.

    A pixel is in when its centre is (no anti-aliasing). The shape is rasterised in a slightly
    larger box when needed so that its tips touch all four box edges (``fits_exactly``; the
    layout samplers only pick such sizes), making the painted pixels' bounding box the object's
    box. Other sizes get the nearest-neighbour resampled raster. The renderer paints these masks
    and the detector compares components against them, so both agree pixel for pixel. The
    returned array is cached and read-only.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if width < 1 or height < 1:
        raise ValueError(f"empty box {width}x{height}")
    if min(width, height) < 3:  # too small to carry a shape: a dot
        mask = np.ones((height, width), dtype=bool)
    elif (fitted := _fitted(shape, width, height)) is not None:
        mask = np.ascontiguousarray(fitted)
    else:
        raw = _tight(_raw_mask(shape, width, height))
        rows = (np.arange(height) * raw.shape[0]) // height
        cols = (np.arange(width) * raw.shape[1]) // width
        mask = raw[rows][:, cols]
    mask.setflags(write=False)
    return mask


def fitted_side(shape: str, side: int) -> int:
    """The smallest square side >= ``side`` at which ``shape`` fits its box exactly."""
    while not fits_exactly(shape, side, side):
        side += 1
    return side


def default_sign_box(image_size: int) -> Box:
    """A centred sign 85% of the image wide and about 40% high."""
    width = round(0.85 * image_size)
    height = max(12, round(0.40 * image_size))
    x0, y0 = (image_size - width) // 2, (image_size - height) // 2
    return (x0, y0, x0 + width, y0 + height)


_FONT_PROBE_SIZE = 40


@functools.lru_cache(maxsize=4096)
def _font_size_for(text: str, sign_width: int, sign_height: int) -> int:
    """Font size at which ``text`` fills 88% of the sign width, capped at 75% of its height.

    Sized per text rather than per length so short strings get big, easily read glyphs.
    """
    probe = ImageFont.load_default(size=_FONT_PROBE_SIZE)
    left, _, right, _ = probe.getbbox(text)
    _, top, _, bottom = probe.getbbox("0AQ")  # cap height plus the Q's tail
    by_width = _FONT_PROBE_SIZE * 0.88 * sign_width / max(1, right - left)
    by_height = _FONT_PROBE_SIZE * 0.75 * sign_height / max(1, bottom - top)
    return max(6, int(min(by_width, by_height)))


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (Pillow >= 10.1 ships it, so this works offline)."""
    return ImageFont.load_default(size=size)


def _bold_glyphs(text: str, size: int, canvas: tuple[int, int], box: Box) -> np.ndarray:
    """Boolean mask, shape (canvas height, canvas width): ``text`` at font ``size`` centred in
    ``box``, rasterised aliased, its strokes thickened to ``1 + size // 14`` px."""
    width, height = canvas
    x0, y0, x1, y1 = box
    font, thick = _font(size), 1 + size // 14
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tx = x0 + (x1 - x0 - (right - left) - (thick - 1)) / 2 - left
    ty = y0 + (y1 - y0 - (bottom - top) - (thick - 1)) / 2 - top
    draw.text((round(tx), round(ty)), text, fill=255, font=font)
    glyphs = np.asarray(image) > 127
    bold = glyphs.copy()
    for dy in range(thick):
        for dx in range(thick):
            bold[dy:, dx:] |= glyphs[: height - dy, : width - dx]
    return bold


def _text_mask(text: str, box: Box, image_size: int) -> np.ndarray:
    """Boolean glyph mask, shape (S, S), of ``text`` centred in ``box`` and emboldened.

    Glyphs are rasterised aliased (fontmode "1"), then thickened to ``1 + size // 14`` px
    strokes: thin 1 px strokes would be lost by a small VAE. Pillow's own ``stroke_width`` is
    anti-aliased, which would break the exact-colour guarantee, hence the manual dilation.
    """
    x0, y0, x1, y1 = box
    size = _font_size_for(text, x1 - x0, y1 - y0)
    bold = _bold_glyphs(text, size, (image_size, image_size), box)
    inside = np.zeros_like(bold)
    inside[y0:y1, x0:x1] = True
    return bold & inside


TEXT_SLOT: tuple[int, int] = (2, 3)
"""Cells (columns, rows) of one character on a ``cells`` sign: 20 x 30 px on the default 10 px
token grid, so each character is the same six transformer tokens wherever it appears."""


def cell_sign_box(length: int, image_size: int, cell: int) -> Box:
    """The sign of a ``cells`` text of ``length`` characters: its slots centred on the grid of
    ``cell``-pixel cells, with half a cell of white around them."""
    grid = image_size // cell
    columns, rows = TEXT_SLOT
    x0, y0 = (grid - length * columns) // 2 * cell, (grid - rows) // 2 * cell
    margin = cell // 2
    box = (x0 - margin, y0 - margin, x0 + length * columns * cell + margin, y0 + rows * cell + margin)
    if box[0] < 0 or box[1] < 0 or box[2] > image_size or box[3] > image_size:
        raise ValueError(f"{length} characters of {columns}x{rows} cells of {cell} px "
                         f"do not fit a {image_size} px image")
    return box


def _cell_text_mask(text: str, box: Box, cell: int, image_size: int) -> np.ndarray:
    """Boolean glyph mask, shape (S, S): character i centred in slot i of the sign ``box``
    (``cell_sign_box``), cap height about 0.8 of the slot, emboldened as ``_text_mask``."""
    columns, rows = TEXT_SLOT
    width, height = columns * cell, rows * cell
    mask = np.zeros((image_size, image_size), dtype=bool)
    x0, y0 = box[0] + cell // 2, box[1] + cell // 2
    for i, char in enumerate(text):
        slot = _bold_glyphs(char, round(0.8 * height), (width, height), (0, 0, width, height))
        mask[y0 : y0 + height, x0 + i * width : x0 + (i + 1) * width] = slot
    return mask


def render_array(scene: Scene) -> np.ndarray:
    """The scene as a uint8 array, shape (S, S, 3) with S = scene.image_size."""
    size = scene.image_size
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND_RGB
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
            raise ValueError(f"box {obj.box} is not inside a {size}x{size} image")
        pixels[y0:y1, x0:x1][shape_mask(obj.shape, x1 - x0, y1 - y0)] = COLORS[obj.color]
    if scene.text is None:
        return pixels
    x0, y0, x1, y1 = box = scene.sign_box or default_sign_box(size)
    pixels[y0:y1, x0:x1] = SIGN_RGB
    if scene.text and scene.text_cell:
        pixels[_cell_text_mask(scene.text, box, scene.text_cell, size)] = TEXT_RGB
    elif scene.text:
        pixels[_text_mask(scene.text, box, size)] = TEXT_RGB
    return pixels


def render_scene(scene: Scene) -> Image.Image:
    """The scene as an RGB PIL image of side ``scene.image_size``."""
    return Image.fromarray(render_array(scene))


# ----------------------------------------------------------------------------------- layouts


def default_size_range(image_size: int) -> tuple[int, int]:
    """Object side range: 10..24 px at 64, scaled with the image, never below MIN_OBJECT_SIZE."""
    low = max(MIN_OBJECT_SIZE, round(image_size * 10 / 64))
    high = max(low + 2, round(image_size * 24 / 64))
    return low, high


def geneval_relations(
    box_a: Sequence[float], box_b: Sequence[float], shrink: float = POSITION_SHRINK
) -> tuple[float, float]:
    """GenEval's normalised, shrunk offset ``(dx, dy)`` of A's centre from B's (0, 0 if none).

    "A left of B" holds for dx < -0.5, "right of" dx > 0.5, "above" dy < -0.5, "below" dy > 0.5.
    """
    a, b = np.asarray(box_a, dtype=float), np.asarray(box_b, dtype=float)
    offset = (a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2
    dims = (a[2:] - a[:2]) + (b[2:] - b[:2])
    revised = np.maximum(np.abs(offset) - shrink * dims, 0) * np.sign(offset)
    norm = float(np.linalg.norm(offset))
    if np.all(np.abs(revised) < 1e-3) or norm == 0.0:
        return 0.0, 0.0
    return float(revised[0] / norm), float(revised[1] / norm)


def relation_holds(box_a: Sequence[float], relation: str, box_b: Sequence[float], margin: float = 0.0) -> bool:
    """Whether "A {relation} B" holds under GenEval's rule with ``margin`` beyond 0.5."""
    dx, dy = geneval_relations(box_a, box_b)
    limit = 0.5 + margin
    checks = {"left of": dx < -limit, "right of": dx > limit, "above": dy < -limit, "below": dy > limit}
    if relation not in checks:
        raise ValueError(f"unknown relation {relation!r}")
    return checks[relation]


def sample_boxes(
    rng: np.random.Generator,
    n: int,
    image_size: int = 64,
    size_range: tuple[int, int] | None = None,
    relations: Sequence[tuple[int, str, int]] = (),
    gap: int = MIN_GAP,
    shapes: Sequence[str] | None = None,
    layout: Layout = FREE,
) -> list[Box]:
    """``n`` square boxes inside the image, pairwise ``gap`` apart, satisfying ``relations``.

    With a ``layout`` cell the image is a grid of ``cell``-pixel cells and each box sits centred
    in one cell of its lattice (every ``stride``-th row and column), at most ``cell`` pixels wide
    (see ``cell_size_range``). Each relation
    ``(i, rel, j)`` asks that box i be ``rel`` box j under GenEval's rule with
    ``RELATION_MARGIN``. With ``shapes`` (one per box), each side is bumped to the nearest size
    at which that shape touches all four box edges (``fitted_side``), so painted extents equal
    the boxes. Boxes are placed one by one, each uniformly among its valid positions; when one
    has none the layout restarts, its upper size shrunk every few restarts so crowded scenes fit.
    """
    cell = layout.cell
    low, high = size_range or (cell_size_range(cell) if cell else default_size_range(image_size))
    if low > image_size:
        raise ValueError(f"min object size {low} exceeds image size {image_size}")
    if cell and high > cell:
        raise ValueError(f"object sizes {low}..{high} do not fit in layout cells of {cell} px")
    for restart in range(40):
        shrunk_high = max(low, round(high * 0.85 ** (restart // 4)))
        boxes = _try_layout(rng, n, image_size, (low, shrunk_high), relations, gap, shapes, layout)
        if boxes is not None:
            return boxes
    raise RuntimeError(f"could not place {n} objects in {image_size}px with sizes {low}..{high}")


def _try_layout(
    rng: np.random.Generator,
    n: int,
    image_size: int,
    size_range: tuple[int, int],
    relations: Sequence[tuple[int, str, int]],
    gap: int,
    shapes: Sequence[str] | None,
    layout: Layout = FREE,
) -> list[Box] | None:
    """One attempt of ``sample_boxes``; None when some box found no valid place."""
    cell = layout.cell
    placed: dict[int, Box] = {}
    for index in range(n):
        for _ in range(8):  # a few sides before giving up on this layout
            side = int(rng.integers(size_range[0], size_range[1] + 1))
            if shapes is not None:
                side = min(fitted_side(shapes[index], side), cell or image_size)
            free = _free_positions(index, side, placed, relations, gap, image_size)
            if cell:
                free &= _cell_corners(side, layout, image_size)
            ys, xs = np.nonzero(free)
            if ys.size:
                pick = int(rng.integers(ys.size))
                placed[index] = (int(xs[pick]), int(ys[pick]), int(xs[pick]) + side, int(ys[pick]) + side)
                break
        else:
            return None
    return [placed[i] for i in range(n)]


def cell_size_range(cell: int) -> tuple[int, int]:
    """Object sides for a cell layout: the whole cell, down to MIN_OBJECT_SIZE or 2 px less."""
    return min(cell, max(MIN_OBJECT_SIZE, cell - 2)), cell


def _cell_corners(side: int, layout: Layout, image_size: int) -> np.ndarray:
    """Corners that centre a ``side`` box in a cell of the layout's lattice: bool (m, m),
    m = image_size - side + 1."""
    m = image_size - side + 1
    corners = np.zeros((m, m), dtype=bool)
    cell = layout.cell
    starts = np.arange(0, image_size - cell + 1, cell * layout.stride) + (cell - side) // 2
    corners[np.ix_(starts, starts)] = True
    return corners


def _free_positions(
    index: int,
    side: int,
    placed: dict[int, Box],
    relations: Sequence[tuple[int, str, int]],
    gap: int,
    image_size: int,
) -> np.ndarray:
    """Valid top-left corners, bool (m, m) indexed [y0, x0] with m = image_size - side + 1."""
    m = image_size - side + 1
    free = np.ones((m, m), dtype=bool)
    for ox0, oy0, ox1, oy1 in placed.values():
        # corners whose box comes within `gap` of this one
        free[max(0, oy0 - side - gap + 1) : max(0, oy1 + gap), max(0, ox0 - side - gap + 1) : max(0, ox1 + gap)] = False
    for a, name, b in relations:
        if a == index and b in placed:
            free &= _relation_grid(side, m, placed[b], name, candidate_is_a=True)
        elif b == index and a in placed:
            free &= _relation_grid(side, m, placed[a], name, candidate_is_a=False)
    return free


def _relation_grid(side: int, m: int, partner: Box, relation: str, candidate_is_a: bool) -> np.ndarray:
    """GenEval's rule (with ``RELATION_MARGIN``) for every candidate corner, bool (m, m).

    The relation reads "A {relation} B"; the candidate box is A or B as ``candidate_is_a`` says.
    """
    pos = np.arange(m) + side / 2
    px, py = (partner[0] + partner[2]) / 2, (partner[1] + partner[3]) / 2
    sign = 1.0 if candidate_is_a else -1.0
    ox, oy = sign * (pos[None, :] - px), sign * (pos[:, None] - py)  # A's centre minus B's
    dims_x = side + partner[2] - partner[0]
    dims_y = side + partner[3] - partner[1]
    rx = np.maximum(np.abs(ox) - POSITION_SHRINK * dims_x, 0) * np.sign(ox)
    ry = np.maximum(np.abs(oy) - POSITION_SHRINK * dims_y, 0) * np.sign(oy)
    norm = np.maximum(np.hypot(ox, oy), 1e-9)
    dx, dy = np.broadcast_to(rx / norm, (m, m)), ry / norm
    limit = 0.5 + RELATION_MARGIN
    grids = {"left of": dx < -limit, "right of": dx > limit, "above": dy < -limit, "below": dy > limit}
    if relation not in grids:
        raise ValueError(f"unknown relation {relation!r}")
    return np.broadcast_to(grids[relation], (m, m))


def sample_objects(
    rng: np.random.Generator,
    specs: Sequence[tuple[str, str]],
    image_size: int = 64,
    size_range: tuple[int, int] | None = None,
    relations: Sequence[tuple[int, str, int]] = (),
    layout: Layout = FREE,
) -> tuple[ObjectSpec, ...]:
    """Objects for the given ``(shape, colour)`` specs, laid out by ``sample_boxes``."""
    shapes = [shape for shape, _ in specs]
    boxes = sample_boxes(rng, len(specs), image_size, size_range, relations, shapes=shapes, layout=layout)
    return tuple(ObjectSpec(shape, color, box) for (shape, color), box in zip(specs, boxes))


def sample_scene(
    rng: np.random.Generator,
    specs: Sequence[tuple[str, str]],
    image_size: int = 64,
    size_range: tuple[int, int] | None = None,
    layout: Layout = FREE,
) -> Scene:
    """A scene of N objects with the given ``(shape, colour)`` each (``layout``: ``sample_boxes``)."""
    return Scene(sample_objects(rng, specs, image_size, size_range, layout=layout), image_size=image_size)


def sample_relation_scene(
    rng: np.random.Generator,
    a: tuple[str, str],
    relation: str,
    b: tuple[str, str],
    image_size: int = 64,
    size_range: tuple[int, int] | None = None,
) -> Scene:
    """Two objects with "A {relation} B" under GenEval's rule (with margin); objects are (A, B)."""
    objects = sample_objects(rng, [a, b], image_size, size_range, relations=[(0, relation, 1)])
    return Scene(objects, image_size=image_size)


def sample_count_scene(
    rng: np.random.Generator,
    shape: str,
    count: int,
    colors: Sequence[str] | str,
    image_size: int = 64,
    size_range: tuple[int, int] | None = None,
) -> Scene:
    """``count`` objects of one shape; ``colors`` is one colour for all or one per object."""
    palette = [colors] * count if isinstance(colors, str) else list(colors)
    if len(palette) != count:
        raise ValueError(f"{len(palette)} colours for {count} objects")
    return sample_scene(rng, [(shape, c) for c in palette], image_size, size_range)


def sample_sign_box(rng: np.random.Generator, image_size: int = 64, text_len: int = MAX_TEXT_LEN) -> Box:
    """A sign 75-95% of the image wide, anywhere inside; short texts get a less elongated sign.

    Aspect (width / height) is 1.2-1.6 for one character, 1.5-2.0 for two, 1.8-2.6 for more,
    so glyphs stay large whatever the length.
    """
    low, high = {1: (1.2, 1.6), 2: (1.5, 2.0)}.get(text_len, (1.8, 2.6))
    width = int(rng.integers(round(0.75 * image_size), round(0.95 * image_size) + 1))
    height = min(image_size, max(12, round(width / rng.uniform(low, high))))
    x0 = int(rng.integers(0, image_size - width + 1))
    y0 = int(rng.integers(0, image_size - height + 1))
    return (x0, y0, x0 + width, y0 + height)


def sample_sign_scene(rng: np.random.Generator, text: str, image_size: int = 64, layout: Layout = FREE) -> Scene:
    """A sign-only scene showing ``text``: anywhere (``layout.text`` free), or in the grid's
    character slots (``cells``, drawing nothing from ``rng``)."""
    if layout.text == "cells":
        box = cell_sign_box(len(text), image_size, layout.cell)
        return Scene((), text=text, image_size=image_size, sign_box=box, text_cell=layout.cell)
    return Scene((), text=text, image_size=image_size, sign_box=sample_sign_box(rng, image_size, len(text)))
