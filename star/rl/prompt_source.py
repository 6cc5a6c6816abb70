"""Prompt records for RL: a seeded, resumable stream of distinct prompts per iteration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from star.data.prompt_sets import load_geneval_metadata, load_ocr_prompts, load_plain_prompts

Record = dict[str, Any]


def load_task_prompts(prompts_dir: Path, task: str, split: str) -> list[Record]:
    """The prepared prompt records of ``task`` ('geneval', 'ocr', 'pickscore') and ``split``."""
    if task == "geneval":
        return load_geneval_metadata(prompts_dir / "geneval" / f"{split}_metadata.jsonl")
    if task == "ocr":
        return [record | {"tag": "ocr"} for record in load_ocr_prompts(prompts_dir / "ocr" / f"{split}.txt")]
    if task == "pickscore":
        return [record | {"tag": "caption"}
                for record in load_plain_prompts(prompts_dir / "pickscore" / f"{split}.txt")]
    raise ValueError(f"unknown task {task!r}: expected 'geneval', 'ocr' or 'pickscore'")


def prompt_pool(records: list[Record], size: int, seed: int) -> list[Record]:
    """A fixed seeded subset of ``size`` records (``train.prompt_pool``; 0 keeps them all).

    The same subset on every process: it depends on the seed only, not on the rank."""
    if size == 0:
        return records
    if size > len(records):
        raise ValueError(f"train.prompt_pool = {size} exceeds the {len(records)} training prompts")
    pick = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed))[:size]
    return [records[i] for i in pick.tolist()]


def training_pool(records: list[Record], size: int, pool_seed: int | None, run_seed: int) -> list[Record]:
    """The prompts a run trains on: ``prompt_pool`` drawn with ``train.pool_seed``, or with the
    run's seed where that is null. A fixed pool seed gives every seed of a study the same prompts,
    so that seeds differ in initialisation and noise only and the pool can be scored before and
    after training (docs/method.md §9.2)."""
    return prompt_pool(records, size, run_seed if pool_seed is None else pool_seed)


class PromptSource:
    """Epochs over ``records`` in a seeded random order; ``next(k)`` gives k records."""

    def __init__(self, records: list[Record], seed: int) -> None:
        if not records:
            raise ValueError("the prompt source needs at least one record")
        self.records = records
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self, k: int) -> list[Record]:
        batch = []
        while len(batch) < k:
            if not self.order:
                self.order = torch.randperm(len(self.records), generator=self.generator).tolist()
            batch.append(self.records[self.order.pop()])
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": list(self.order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order = list(state["order"])
