"""A full disk, simulated for the files under one folder: a file opened there for writing takes
half of the first write, then fails with ENOSPC, as a disk that fills mid-write does. It covers
Python's own writes (text, CSV, pandas, PNG through PIL); the native writers (safetensors'
Rust, ``torch.save``'s C++) are replaced by ``full_safetensors`` and ``full_torch_save``.

    python -c "from tests.full_disk import fill; fill('/tmp/x'); ..."   (a stage on a full disk)
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

NO_SPACE = os.strerror(errno.ENOSPC)
"""``No space left on device``."""


def _half_written(path: str | os.PathLike[str], data: bytes) -> None:
    """Leave half of ``data`` at ``path`` with the OS's own calls (``open`` may be full)."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(handle, data[: len(data) // 2])
    os.close(handle)


class _FullFile:
    """A file on a full disk: the first write lands half, then fails; the rest is the real file."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: Any) -> int:
        self._handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, NO_SPACE)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def full_open(folder: str | Path, pattern: str = "*") -> Callable[..., Any]:
    """``open`` on a disk that is full under ``folder`` for files named like ``pattern``."""
    real_open, root = io.open, Path(folder).resolve()

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and any(flag in mode for flag in "wax+"):
            path = Path(file).resolve()
            if path.is_relative_to(root) and path.match(pattern):
                return _FullFile(handle)
        return handle

    return open_


def fill(folder: str | Path, pattern: str = "*") -> None:
    """From now on, this process's Python writes under ``folder`` fail as on a full disk."""
    builtins.open = io.open = full_open(folder, pattern)


def full_safetensors(tensors: Any, filename: str | os.PathLike[str], metadata: Any = None) -> None:
    """``safetensors.torch.save_file`` on a full disk: half a file, then the error the Rust
    writer raises (measured on a full tmpfs)."""
    from safetensors import SafetensorError

    _half_written(filename, b"\0" * 64)
    raise SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error {errno.ENOSPC})")


def full_torch_save(obj: Any, target: str | os.PathLike[str], *args: Any, **kwargs: Any) -> None:
    """``torch.save`` on a full disk: half a file, then the error its C++ writer raises."""
    _half_written(target, b"\0" * 64)
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
