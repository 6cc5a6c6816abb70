"""The closed vocabulary of the shapes world: shapes, colours, counts, relations, characters.

Everything else in the world (renderer, prompt generator, detector, tokenizer) reads its words
from here, so one edit changes them all consistently.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
"""Shape classes; they play the role of GenEval's COCO object classes."""

SHAPE_PLURALS: dict[str, str] = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}

# The ten GenEval colours, with the RGB the renderer paints them in. The background is a mid
# grey that is none of them, so white and black shapes stay visible.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 20),
    "green": (30, 160, 50),
    "blue": (30, 70, 225),
    "purple": (135, 45, 185),
    "pink": (255, 135, 195),
    "brown": (125, 75, 25),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
BACKGROUND_RGB: tuple[int, int, int] = (128, 128, 128)

NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_COUNT: int = 4

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

TEXT_CHARSET: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
"""Characters of the short strings rendered on signs (OCR prompts)."""
MAX_TEXT_LEN: int = 4

GENEVAL_TASKS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)
