"""Where the model a run loads comes from, checked before anything heavy is imported."""

from __future__ import annotations

from pathlib import Path

from rewards.hub import HUB_ID
from star.config import ModelConfig



def missing_model(model: ModelConfig, base_model_dir: Path) -> str | None:
    """Why the configured model cannot be loaded from disk, or None. The embedded base must
    have been built (``dvc repro base``) or pulled; a ``model.pretrained`` that is not a hub id
    must be an existing local directory (a hub id is left to ``from_pretrained``)."""
    if model.source == "embedded":
        if not (base_model_dir / "model_index.json").is_file():
            return (f"the embedded base model is not at {base_model_dir} (paths.base_model): build it with "
                    f"`dvc repro base` (about 20 min on 2 cores) or fetch it with `dvc pull {base_model_dir}`")
        return None
    name = model.pretrained
    local = Path(name).expanduser()
    if not HUB_ID.match(name) and not local.is_dir():
        return (f"model.pretrained = {name!r} is not a local directory (and not a hub id owner/name): "
                "point it at a folder written by save_pretrained / `hf download`")
    return None
