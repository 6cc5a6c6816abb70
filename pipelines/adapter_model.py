"""A trained variant as an MLflow model (pyfunc, logged from code): prompts in, images out.

    import mlflow
    images = mlflow.pyfunc.load_model("runs:/<train run id>/<variant>-s<seed>").predict(["a photo of a red star"])

``images`` is a (B, H, W, 3) uint8 array, one image per prompt, sampled with the evaluation's
ODE sampler (``eval.steps``, ``eval.guidance_scale``) from noise seed ``i`` for prompt ``i``
(the evaluation's first noise). The model holds the variant's LoRA weights and
its ``variant.json``; the base model it applies to is referenced, not copied (SD3.5-M is
5 GB): the embedded base by the absolute path of ``paths.base_model`` at training time, a real
SD3 by its hub id or local path. ``model_config`` holds both, and the evaluation sampler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext


def _prompts(model_input: Any) -> list[str]:
    """A list of prompts, a string, or a DataFrame whose first column holds them."""
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        return [str(p) for p in model_input.iloc[:, 0]]
    return [str(p) for p in model_input]


class TrainedVariant(PythonModel):
    """The base pipeline with the variant's adapter fused; ``predict`` samples one image per prompt."""

    def load_context(self, context: PythonModelContext) -> None:
        from star.models.sd3 import load_pipeline
        from star.models.variants import load_variant

        config = context.model_config
        pipe = load_pipeline(config["base_model"], dtype=config.get("dtype", "float32"),
                             revision=config.get("revision"))
        self.pipe = load_variant(pipe, Path(context.artifacts["variant"]))
        self.steps, self.guidance_scale = int(config["steps"]), float(config["guidance_scale"])

    def predict(self, context: PythonModelContext, model_input: list[str],
                params: dict[str, Any] | None = None) -> np.ndarray:
        from star.sampling.sampler import sample_ode

        prompts = _prompts(model_input)
        images = sample_ode(self.pipe, prompts, list(range(len(prompts))), self.steps, self.guidance_scale)
        return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


mlflow.models.set_model(TrainedVariant())
