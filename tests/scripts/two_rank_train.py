"""Run by tests/test_trainer.py under ``torchrun --nproc_per_node 2``: two CPU processes (gloo)
train the micro model for two iterations; each rank saves its final trainable weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from star.config import load_config  # noqa: E402
from star.models.lora import trainable_state  # noqa: E402
from star.rl.trainer import Trainer  # noqa: E402
from tests.conftest import GENEVAL_RECORDS, MICRO, BrightnessReward, micro_pipeline  # noqa: E402


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    overrides = {"train": {"iterations": 2, "prompts_per_iteration": 1, "group_size": 4, "steps": 2,
                           "minibatch_size": 2}}
    cfg = load_config(MICRO, overrides=overrides)
    trainer = Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, out_dir / "work", progress=False)
    assert trainer.accelerator.num_processes == 2, "expected two processes"
    history = trainer.train()
    rank = trainer.accelerator.process_index
    torch.save({"weights": trainable_state(trainer.transformer), "history": history}, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
