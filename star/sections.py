"""The base of every configuration section: strict pydantic models whose fields are knobs with one
default and a one-line description, and the error a bad value raises (it names the key)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """A configuration file or override that does not validate; the message names each key."""


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def knob(default: Any, description: str, **constraints: Any) -> Any:
    """A field with its one default, a one-line description (``describe_knobs``) and constraints."""
    return Field(default=default, description=description, **constraints)
