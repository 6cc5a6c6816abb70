"""Atomic, resumable checkpoints: a failed or interrupted run keeps its last one and resumes."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


class CheckpointWriteError(OSError):
    """A checkpoint or model could not be written; names the path and the OS error."""


def _write_failure(path: Path, error: BaseException) -> CheckpointWriteError:
    """The error to raise when writing ``path`` failed: torch reports a full disk as
    ``[enforce fail at inline_container.cc] unexpected pos``, which names neither."""
    code = error.errno if isinstance(error, OSError) else None
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
    if code == errno.ENOSPC or "unexpected pos" in text:
        code, text = errno.ENOSPC, f"no space left on the device ({text})"
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free / 2**20
    return CheckpointWriteError(
        code, f"cannot write {path}: {text}; {free:.0f} MiB free there. The previous version is kept"
    )


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written
    file; a failed write raises ``CheckpointWriteError`` and keeps the previous file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as error:
        raise _write_failure(path, error) from error
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        raise _write_failure(path, error) from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_directory(out_dir: Path, write: Callable[[Path], None]) -> None:
    """``write`` into ``<out_dir>.partial``, then swap it in: a crash never leaves half a
    model, and a failed write leaves no ``.partial`` folder behind."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, (OSError, RuntimeError)):
            raise _write_failure(out_dir, error) from error
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


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
