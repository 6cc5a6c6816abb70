"""Loading a pretrained model by hub id or local path, with an error that says what to do.

Shared by the reward models and by the SD3 loader (``star.models.sd3``): a missing model is a
``ModelLoadError`` naming the model, ``HF_HUB_OFFLINE`` and the way out, never a bare traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
"""A Hugging Face repo id: ``name`` or ``owner/name`` (no leading ``/``, ``.`` or ``~``, one slash)."""


class ModelLoadError(RuntimeError):
    """The requested model could not be loaded; the message names it and what to do."""


def load_pretrained(loader: Callable[..., Any], name: str, what: str, hint: str = "pass a local copy",
                    **kwargs: Any) -> Any:
    """``loader(name, **kwargs)`` (a ``from_pretrained``), turning a missing model into a
    ``ModelLoadError`` that names the model, ``HF_HUB_OFFLINE`` and what to do."""
    if not HUB_ID.match(name) and not Path(name).expanduser().exists():
        raise ModelLoadError(f"could not load the {what}: {name} does not exist (a local path, not a hub id); {hint}")
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        raise ModelLoadError(
            f"could not load the {what} {name!r}: {error}\n"
            f"Its weights are neither a local directory nor in the Hugging Face cache, and the hub "
            f"was not reachable (HF_HUB_OFFLINE={offline}). Download it on a connected machine "
            f"(`hf download {name}`), or {hint}."
        ) from error
