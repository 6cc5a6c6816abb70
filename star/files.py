"""Writing outputs so that a failure names the path and its cause and loses nothing.

Every file or folder a stage writes (checkpoints, models, metrics, figures, prompt sets,
reports) is written under a temporary name beside its target and renamed into place, so a
failed write keeps the previous version; the failure is raised as ``WriteError``, which reads
``could not write <path>: [Errno 28] No space left on device``. Standard library only: every
layer may use it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")
"""How Rust libraries (safetensors) report the OS error behind an I/O error."""

_TORCH_SHORT_WRITE = "unexpected pos"
"""How ``torch.save`` reports a write cut short, a full disk: ``[enforce fail at
inline_container.cc] . unexpected pos 576 vs 534``."""


class WriteError(OSError):
    """A file or folder could not be written. ``str()`` is the whole message, naming the path
    and the cause; ``errno`` is the cause's (a full disk is not retried as transient)."""

    def __str__(self) -> str:
        return str(self.strerror)


def _cause(error: BaseException) -> tuple[int | None, str] | None:
    """The OS error behind a failed write, as ``(errno, "[Errno N] text")``; None when
    ``error`` is not a failed write (a bug, a bad argument): that one passes through unchanged."""
    if isinstance(error, OSError):
        return error.errno, f"[Errno {error.errno}] {error.strerror}" if error.errno else str(error)
    text = (str(error).splitlines() or [""])[0]
    code = _OS_ERROR_CODE.search(text)
    if code:
        return int(code[1]), f"[Errno {code[1]}] {os.strerror(int(code[1]))}"
    if _TORCH_SHORT_WRITE in text:
        torch_text = text[text.index(_TORCH_SHORT_WRITE):]
        return errno.ENOSPC, f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)} (torch: {torch_text})"
    if isinstance(error, RuntimeError):
        return None, f"{type(error).__name__}: {text}"
    return None


def write_error(path: str | Path, error: BaseException) -> WriteError | None:
    """The ``WriteError`` for a failed write of ``path`` (with the free space left when the disk
    is full, and whether a previous version is kept); None when ``error`` is no write failure."""
    cause = _cause(error)
    if cause is None:
        return None
    code, text = cause
    message = f"could not write {path}: {text}"
    local = Path(path)
    if code in (errno.ENOSPC, errno.EDQUOT):
        folder = next((p for p in (local, *local.parents) if p.exists()), None)
        if folder is not None:
            message += f"; {shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
    if local.exists():
        message += "; its previous version is kept"
    return WriteError(code, message)


@contextmanager
def failures_named(path: str | Path) -> Iterator[None]:
    """Raise a write that fails inside the block as ``WriteError`` naming ``path``, the output
    the user knows (a ``WriteError`` of a file inside it is renamed to ``path``); any other
    exception passes through unchanged."""
    try:
        yield
    except Exception as error:
        cause = error.__cause__ if isinstance(error, WriteError) and error.__cause__ is not None else error
        named = write_error(path, cause)
        if named is None:
            raise
        raise named from cause


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: hidden, beside it, with its
    suffix (writers that pick a format by the suffix, such as matplotlib's, still do)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Write ``path`` through a temporary file: the block writes the path it is given, which
    then replaces ``path``. A failure raises ``WriteError`` naming ``path`` and its cause, leaves
    no temporary file and keeps the previous ``path``."""
    path = Path(path)
    partial = partial_path(path)
    with failures_named(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield partial
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """``Path(path).write_text(text)``, atomically (``atomic_file``)."""
    with atomic_file(path) as partial:
        partial.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``Path(path).write_bytes(data)``, atomically (``atomic_file``)."""
    with atomic_file(path) as partial:
        partial.write_bytes(data)
    return Path(path)


def atomic_directory(out_dir: Path, write: Callable[[Path], object]) -> None:
    """``write`` a folder into ``<out_dir>.partial``, then swap it in for ``out_dir``: a crash
    never leaves half a model, and a failed write raises ``WriteError`` naming ``out_dir``,
    leaves no ``.partial`` folder and keeps the previous ``out_dir``."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    previous = out_dir.with_name(out_dir.name + ".previous")
    shutil.rmtree(staging, ignore_errors=True)
    with failures_named(out_dir):
        try:
            write(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    shutil.rmtree(previous, ignore_errors=True)
    with failures_named(out_dir):
        if out_dir.exists():
            out_dir.rename(previous)
        staging.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
