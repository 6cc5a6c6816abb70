"""The world's configuration section (``world`` in params.yaml): image size, layout and sign text."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from star.sections import Section, knob
from star.world.vocab import MAX_TEXT_LEN, SIGN_CHARSET, TEXT_CHARSET, TEXT_LENGTH_WEIGHTS


class WorldConfig(Section):
    """The procedural shapes world: image size and prompt-set sizes."""

    image_size: int = knob(80, "side of rendered and generated images, pixels", ge=32, le=512)
    layout_cell: int = knob(
        10, "objects sit one per cell of this many pixels (one transformer token; 0: anywhere)", ge=0
    )
    layout_stride: int = knob(
        2, "objects only in every k-th row and column of cells (2: a 4x4 lattice on an 8x8 grid)", ge=1, le=4
    )
    train_prompts: int = knob(600, "prompts per task family in each train split", ge=6)
    test_prompts: int = knob(120, "prompts per task family in each test split", ge=6)
    text_layout: Literal["free", "cells"] = knob(
        "cells",
        "OCR signs: 'free' (a sign anywhere, proportional font) "
        "or 'cells' (one character per 2x3 layout cells, centred)",
    )
    text_charset: str = knob(SIGN_CHARSET, f"characters signs say, a subset of {TEXT_CHARSET}", min_length=1)
    text_lengths: dict[int, float] = knob(
        dict(TEXT_LENGTH_WEIGHTS), f"sign-text length -> relative weight (lengths 1..{MAX_TEXT_LEN})", min_length=1
    )

    @field_validator("text_charset")
    @classmethod
    def _known_characters(cls, value: str) -> str:
        unknown = sorted(set(value) - set(TEXT_CHARSET))
        if unknown or len(set(value)) != len(value):
            raise ValueError(f"{value!r} must be distinct characters of {TEXT_CHARSET!r} (the tokenizer's); "
                             f"unknown: {unknown}")
        return value

    @field_validator("text_lengths")
    @classmethod
    def _valid_lengths(cls, value: dict[int, float]) -> dict[int, float]:
        if (any(not 1 <= k <= MAX_TEXT_LEN for k in value) or any(w < 0 for w in value.values())
                or sum(value.values()) <= 0):
            raise ValueError(f"{value} needs lengths 1..{MAX_TEXT_LEN} with weights >= 0, not all 0")
        return dict(sorted(value.items()))  # a draw depends on key order: the same lengths draw the same signs

    @model_validator(mode="after")
    def _cells_fit_layouts(self) -> WorldConfig:
        if self.layout_cell and not 8 <= self.layout_cell <= self.image_size // 3:
            raise ValueError(
                f"layout_cell={self.layout_cell} must be 0 or 8..image_size/3={self.image_size // 3}: "
                "objects need at least 8 px, and four objects with a free cell between them a 3x3 grid"
            )
        if (self.layout_cell and self.layout_stride > 1
                and self.image_size // (self.layout_cell * self.layout_stride) < 2):
            raise ValueError(
                f"layout_stride={self.layout_stride} leaves fewer than 2x2 places for objects of "
                f"layout_cell={self.layout_cell} px in {self.image_size} px images"
            )
        if self.text_layout == "cells":
            from star.world.render import cell_sign_box  # the renderer's own check (numpy, PIL: only here)

            if not self.layout_cell:
                raise ValueError("text_layout='cells' puts characters on the layout grid: it needs layout_cell > 0")
            longest = max(self.text_lengths)
            try:
                cell_sign_box(longest, self.image_size, self.layout_cell)
            except ValueError as error:
                raise ValueError(
                    f"text_layout='cells' with {longest}-character texts (text_lengths): {error}"
                ) from None
        return self
