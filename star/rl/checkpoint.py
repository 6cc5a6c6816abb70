"""Atomic, resumable checkpoints: a failed or interrupted run keeps its last one and resumes."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate.utils import set_seed

from star.files import atomic_file

logger = logging.getLogger(__name__)

RESUMED = "resumed_from"
"""The ``extra`` key of ``log_resume``'s record: the iteration or step a run resumed from
(``pipelines/tracking.py`` tags the stage's MLflow run with it)."""


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``star.files.atomic_file``: never a half-written file; a failed
    write raises ``WriteError`` naming ``path`` and its cause and keeps the previous file."""
    with atomic_file(path) as partial:
        torch.save(obj, partial)


@contextmanager
def remove_if_left_empty(*folders: Path) -> Iterator[None]:
    """On the way out of the block, success or failure, remove each of ``folders`` (in order)
    that holds nothing: a failed stage leaves no empty output or work folders behind."""
    try:
        yield
    finally:
        remove_empty_folders(*folders)


def remove_empty_folders(*folders: Path) -> None:
    """Remove each of ``folders`` (in order) that exists and is empty."""
    for folder in folders:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a corrupt file must not be silently ignored
        raise RuntimeError(f"checkpoint {path} cannot be read ({error}); delete it to restart") from error


def weights_digest(module: torch.nn.Module) -> str:
    """16 hex digits of a hash of ``module``'s state dict (names, shapes, dtypes and bytes):
    which weights a run started from. Reads every byte once, tensor by tensor (seconds for
    SD3.5-M's 2.5 B parameters), so a resume can tell that the base model changed."""
    digest = hashlib.blake2b(digest_size=8)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a run draws from, so a resumed run continues identically: the states
    accelerate's ``save_state`` records (Python, numpy, torch's CPU and, when present, CUDA's on
    every device) and the run's own ``generator``. They go into the trainer's one atomic checkpoint
    file rather than the folder of files per process that ``save_state`` writes, which a crash
    could leave half written."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": None if generator is None else generator.get_state(),
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Put back what ``rng_state`` recorded; CUDA's states when both the checkpoint and this
    process have CUDA (a GPU checkpoint resumed on CPU continues with CPU draws alone)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy, torch and every CUDA device (accelerate's ``set_seed``); returns a
    dedicated torch generator for data sampling."""
    set_seed(seed)
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
    log_resume(path, int(state["step"]))
    return int(state["step"])


def log_resume(path: Path, done: int, unit: str = "step") -> None:
    """One INFO line: the run resumes from the checkpoint ``path`` with ``done`` steps (or
    iterations) behind it; the record carries ``done`` as ``RESUMED`` and the path as ``checkpoint``."""
    record = {RESUMED: done, "checkpoint": str(path)}
    logger.info("resuming from checkpoint %s at %s %d", path, unit, done, extra=record)
