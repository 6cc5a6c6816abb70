"""The prompt sets a study trains and evaluates on, per task, materialised by ``prepare``.

``prompt_sets`` names, for each task and split, the embedded world's generated set or a file in
the public formats (``star/data/prompt_sets.py``). ``materialise_prompt_sets`` reads and validates
every file, generates what is generated, and writes all of it in one layout under
``paths.prompts`` — the only place ``train`` and ``evaluate`` read prompts from
(``star.rl.prompt_source.load_task_prompts``), so DVC's record of that folder is the record of the
prompts a run used.

Layout: ``geneval/{split}_metadata.jsonl``; ``ocr/{split}.txt`` and ``pickscore/{split}.txt``
(one prompt a line) beside ``{split}_metadata.jsonl`` with the full records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from star.config import GENEVAL_TEMPLATES, WORLD_SET, GenEvalPromptSets, PromptSetsConfig, TaskPromptSets
from star.data.geneval_templates import template_training_set
from star.data.prompt_sets import (
    PromptSetError,
    load_geneval_metadata,
    load_object_names,
    load_ocr_prompts,
    load_plain_prompts,
)
from star.files import write_text

Record = dict[str, Any]
TASKS: tuple[str, ...] = ("geneval", "ocr", "pickscore")
SPLITS: tuple[str, ...] = ("train", "test")


class PromptSetConfigError(ValueError):
    """A ``prompt_sets`` value names a file that is not there; the message names the key."""


def check_prompt_files(sets: PromptSetsConfig) -> None:
    """Every file a ``prompt_sets`` key names exists (one error naming each missing key)."""
    missing = []
    for task in TASKS:
        for split, path in getattr(sets, task).files().items():
            if not path.is_file():
                missing.append(f"prompt_sets.{task}.{split} = {str(path)!r}: no such file")
    names = sets.geneval.object_names
    if names is not None and not names.is_file():
        missing.append(f"prompt_sets.geneval.object_names = {str(names)!r}: no such file")
    if missing:
        raise PromptSetConfigError("prompt sets not found (paths are relative to the working directory):\n  "
                                   + "\n  ".join(missing))


def validate_prompt_files(sets: PromptSetsConfig) -> None:
    """Every file ``prompt_sets`` names exists and parses as ``prepare`` reads it (GenEval
    classes checked against ``object_names`` when given): ``prepare``'s pre-flight check.

    Raises:
        PromptSetConfigError: a configured file is missing (named by its key).
        PromptSetError: a file is malformed (its key, the file and every bad line named).
    """
    check_prompt_files(sets)
    names = load_object_names(sets.geneval.object_names) if sets.geneval.object_names else None
    for task in TASKS:
        for split, path in getattr(sets, task).files().items():
            try:
                _load_file(task, path, set(names) if names else None)
            except PromptSetError as error:
                raise PromptSetError(f"prompt_sets.{task}.{split}: {error}") from None


def _load_file(task: str, path: Path, classes: set[str] | None) -> list[Record]:
    if task == "geneval":
        return load_geneval_metadata(path, classes)
    if task == "ocr":
        return load_ocr_prompts(path)
    return load_plain_prompts(path)


def _task_records(
    task: str, sets: TaskPromptSets, world: dict[str, list[Record]], names: list[str] | None
) -> tuple[dict[str, list[Record]], dict[str, int]]:
    """``{"train", "test"}`` records of one task, and extra counts (template tags). ``names``:
    GenEval's class names, when given (templates draw from them, files are checked against them)."""
    classes = set(names) if names else None
    records = {split: world[split] if value == WORLD_SET else _load_file(task, Path(value), classes)
               for split, value in (("test", sets.test), ("train", sets.train)) if value != GENEVAL_TEMPLATES}
    extra: dict[str, int] = {}
    if isinstance(sets, GenEvalPromptSets) and sets.train == GENEVAL_TEMPLATES:
        records["train"], per_tag = template_training_set(
            names or [], sets.templates_per_tag, sets.templates_seed, [r["prompt"] for r in records["test"]]
        )
        extra = {f"geneval_train_templates_{tag}": n for tag, n in per_tag.items()}
    return records, extra


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    write_text(path, "".join(line + "\n" for line in lines))


def write_task_sets(task: str, records: dict[str, list[Record]], out_dir: Path) -> None:
    """One task's splits in the layout ``load_task_prompts`` reads."""
    for split, rows in records.items():
        _write_lines(out_dir / task / f"{split}_metadata.jsonl", (json.dumps(r) for r in rows))
        if task != "geneval":
            _write_lines(out_dir / task / f"{split}.txt", (r["prompt"] for r in rows))


def materialise_prompt_sets(
    sets: PromptSetsConfig, world: dict[str, dict[str, list[Record]]], out_dir: Path
) -> dict[str, int]:
    """Write every task's train and test prompts under ``out_dir``; returns counts per set.

    Args:
        sets: the ``prompt_sets`` section (validated when the config loaded).
        world: the world's generated sets, ``{task: {split: records}}`` (used where a value is
            ``world``).
        out_dir: ``paths.prompts``.

    Counts: ``{task}_{split}`` records, ``{task}_train_test_overlap`` (training prompts that are
    also test prompts; the world and template sets have none), and per-tag template counts.

    Raises:
        PromptSetConfigError: a configured file is missing (named by its key).
        PromptSetError: a file is malformed (every bad line named).
    """
    check_prompt_files(sets)
    names = load_object_names(sets.geneval.object_names) if sets.geneval.object_names else None
    counts: dict[str, int] = {}
    for task in TASKS:
        records, extra = _task_records(task, getattr(sets, task), world[task], names)
        write_task_sets(task, records, out_dir)
        test_prompts = {r["prompt"] for r in records["test"]}
        counts |= {f"{task}_{split}": len(records[split]) for split in SPLITS} | extra
        counts[f"{task}_train_test_overlap"] = sum(r["prompt"] in test_prompts for r in records["train"])
    return counts


def sources(sets: PromptSetsConfig) -> dict[str, str]:
    """``{"geneval.train": "world", ...}``: where each set came from (for logs and run tags)."""
    return {f"{task}.{split}": getattr(getattr(sets, task), split) for task in TASKS for split in SPLITS}
