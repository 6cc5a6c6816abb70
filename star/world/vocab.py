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
"""Characters the world's tokenizers know and signs may say (``world.text_charset`` picks from them)."""
SIGN_CHARSET: str = "ACEHKLMNPRTX3479"
"""Default ``world.text_charset``: 16 glyphs the OCR backend never confuses on ``cells`` signs
(read exactly 1.00; with all 36, 0/O and I/1 cap the ground truth near 0.91: method §0)."""
MAX_TEXT_LEN: int = 4
TEXT_LENGTH_WEIGHTS: dict[int, float] = {2: 0.5, 3: 0.5}
"""Default chance of each sign-text length (``world.text_lengths``): 2-3 characters fit the 8-token
row of ``cells`` signs with a margin, and a miniature learns to letter them within its budget."""

GENEVAL_TASKS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)

# Pretraining mixture. The GenEval tags get 63% (counting and position, the hardest for a small
# model, the most), OCR signs 30% and free captions 7% for the preference task's phrasings.
# Signs need that share: at 5% no base lettered a readable sign, and a base with 30% still
# needs its 80 px steps to bind each character to its slot (method §0, "Signs that a small model
# can learn to write"). Prompts without colours (single_object, two_object, counting, position)
# are rendered in random colours: that is how the model meets both prompt styles, "a photo of a
# circle" and "a photo of a red circle", for the same picture.
PRETRAIN_MIXTURE: dict[str, float] = {
    "single_object": 0.09,
    "two_object": 0.105,
    "counting": 0.125,
    "colors": 0.09,
    "position": 0.125,
    "color_attr": 0.095,
    "ocr": 0.30,
    "caption": 0.07,
}
"""The world's image mixture: the share of each family among world images (the reward models'
training set; ``base.mixture`` draws from it with fewer signs, ``LOW_RES_MIXTURE``)."""

# The 40 px set (the VAE's images and the interleaved 40 px transformer steps): signs 5 %, as
# lettering is learnt at 80 px (FULL_SIZE_MIXTURE) and every sign here costs a GenEval scene
# (docs/method.md §0 links the measurement).
LOW_RES_MIXTURE: dict[str, float] = {**PRETRAIN_MIXTURE, "ocr": 0.05}
"""Default ``base.mixture``: the share of each family among the 40 px pretraining images."""

# The full-size (80 px) phase: signs get 60% and the other families keep their relative shares.
# Lettering is learnt there, at some price in GenEval (docs/method.md §0 links the measurement).
FULL_SIZE_MIXTURE: dict[str, float] = {
    "single_object": 0.0514,
    "two_object": 0.06,
    "counting": 0.0714,
    "colors": 0.0514,
    "position": 0.0714,
    "color_attr": 0.0543,
    "ocr": 0.60,
    "caption": 0.04,
}
"""Default ``base.full_size_mixture``: the share of each family among the full-size images."""
