"""Atomic, resumable checkpoints: a failed or interrupted run keeps its last one and resumes."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_directory(out_dir: Path, write: Callable[[Path], None]) -> None:
    """``write`` into ``<out_dir>.partial``, then swap it in: a crash never leaves half a model."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    write(staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a corrupt file must not be silently ignored
        raise RuntimeError(f"checkpoint {path} cannot be read ({error}); delete it to restart") from error


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a run draws from, so a resumed run continues identically."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": None if generator is None else generator.get_state(),
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and random; returns a dedicated torch generator for data sampling."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def save_progress(path: Path, step: int, generator: torch.Generator, **parts: Stateful) -> None:
    """Atomically checkpoint a training loop: each part's state, the next step and the RNGs."""
    state = {name: part.state_dict() for name, part in parts.items()}
    atomic_save(state | {"step": step, "rng": rng_state(generator)}, path)


def resume_progress(path: Path, generator: torch.Generator, **parts: Stateful) -> int:
    """Restore what ``save_progress`` wrote into ``parts`` and the RNGs; returns the step to
    start from (0 when there is no checkpoint)."""
    state = load(path)
    if state is None:
        return 0
    for name, part in parts.items():
        part.load_state_dict(state[name])
    restore_rng_state(state["rng"], generator)
    return int(state["step"])
