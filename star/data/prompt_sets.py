"""Parsing and validation of prompt-set files: GenEval metadata, OCR prompts, plain prompts.

The public sets (GenEval, Flow-GRPO's OCR and PickScore sets) and the project's own generated
sets share these formats, so one parser serves both. Every loader reads the whole file,
collects *all* problems and raises one ``PromptSetError`` naming the file and each bad line
(1-based), so a broken file is fixed in one pass rather than one error at a time.

Formats:

- GenEval (JSON lines): ``{"tag", "prompt", "include": [{"class", "count", "color"?,
  "position"?: [relation, earlier clause index]}], "exclude"?: [{"class", "count"}]}``; extra
  top-level keys are allowed, unknown keys inside a clause are not (they are typos such as
  "colour" that would otherwise be silently ignored by the scorer);
- OCR (text): one prompt a line, the target text between the first pair of double quotes
  (Flow-GRPO reads it as ``prompt.split('"')[1]``);
- plain (text): one prompt a line (PickScore).

Blank lines are skipped everywhere; lines are stripped; a file with no prompt at all is an
error too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from rewards.geneval_rules import COLORS, RELATIONS, TASKS
from rewards.ocr_target import extract_quoted_text

MAX_LISTED: int = 20
"""Bad lines listed in an error message; the rest are counted."""

CLAUSE_KEYS: frozenset[str] = frozenset({"class", "count", "color", "position"})
EXCLUDE_KEYS: frozenset[str] = frozenset({"class", "count"})

BENCHMARK_FILES: dict[str, str] = {
    "geneval_evaluation_metadata": "geneval/evaluation_metadata.jsonl",
    "geneval_test_metadata_x4": "geneval/test_metadata_x4.jsonl",
    "ocr_test": "ocr/test.txt",
    "pickscore_train": "pickscore/train.txt",
    "pickscore_test": "pickscore/test.txt",
}
"""Public sets ``validate_benchmarks`` checks: name -> path under the benchmarks folder."""
OBJECT_NAMES: str = "geneval/object_names.txt"
"""GenEval's 80 COCO class names; optional, checked against the GenEval sets when present."""

Problems = list[tuple[int, str]]


class PromptSetError(ValueError):
    """A prompt-set file is malformed; the message names the file and every bad line."""


# ------------------------------------------------------------------------------ reading


def _raise_if_problems(path: Path, problems: Problems) -> None:
    """One ``PromptSetError`` listing up to ``MAX_LISTED`` bad lines, if there are any."""
    if not problems:
        return
    lines = [f"  line {number}: {what}" for number, what in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  and {len(problems) - MAX_LISTED} more")
    raise PromptSetError(f"{path}: {len(problems)} malformed line(s):\n" + "\n".join(lines))


def _read_lines(path: str | Path) -> tuple[Path, list[tuple[int, str]], Problems]:
    """Non-blank stripped lines with their numbers, and the lines that are not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt set not found: {path}")
    lines: list[tuple[int, str]] = []
    problems: Problems = []
    # bytes first, so one bad byte is reported by line instead of failing the whole file
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as error:
            problems.append((number, f"not valid UTF-8 ({error.reason} at byte {error.start})"))
            continue
        if text:
            lines.append((number, text))
    return path, lines, problems


def _load(path: str | Path, parse: Callable[[str], tuple[Any, list[str]]]) -> list[Any]:
    """Parse every non-blank line; raise one error for all bad lines (or an empty file)."""
    path, lines, problems = _read_lines(path)
    records = []
    for number, text in lines:
        record, errors = parse(text)
        if errors:
            problems.append((number, "; ".join(errors)))
        else:
            records.append(record)
    problems.sort()
    _raise_if_problems(path, problems)
    if not records:
        raise PromptSetError(f"{path}: no prompts in the file")
    return records


# ------------------------------------------------------------------------------ GenEval


def _is_count(value: Any) -> bool:
    """An int >= 1 (bool is an int subclass in Python, and not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_class(where: str, value: Any, classes: Collection[str] | None) -> list[str]:
    """A non-empty class name, known when ``classes`` is given."""
    if not isinstance(value, str) or not value.strip():
        return [f"{where}: 'class' must be a non-empty string, got {value!r}"]
    if classes is not None and value not in classes:
        return [f"{where}: unknown class {value!r}"]
    return []


def _check_position(where: str, value: Any, index: int) -> list[str]:
    """``[relation, index of an earlier include clause]``."""
    if not isinstance(value, list) or len(value) != 2:
        return [f"{where}: 'position' must be [relation, clause index], got {value!r}"]
    relation, target = value
    errors = []
    if relation not in RELATIONS:
        errors.append(f"{where}: unknown relation {relation!r} (expected one of {list(RELATIONS)})")
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < index:
        errors.append(f"{where}: position index {target!r} must point at an earlier include clause (0..{index - 1})")
    return errors


def _check_clause(where: str, clause: Any, keys: frozenset[str], classes: Collection[str] | None) -> list[str]:
    """Shared checks of include and exclude clauses: a dict, known keys, class and count."""
    if not isinstance(clause, dict):
        return [f"{where}: expected an object, got {type(clause).__name__}"]
    errors = []
    unknown = sorted(set(clause) - keys)
    if unknown:
        errors.append(f"{where}: unknown key(s) {unknown}")
    errors += _check_class(where, clause.get("class"), classes)
    if not _is_count(clause.get("count")):
        errors.append(f"{where}: 'count' must be an integer >= 1, got {clause.get('count')!r}")
    return errors


def _check_include(include: Any, classes: Collection[str] | None) -> list[str]:
    """A non-empty list of include clauses with valid colours and positions."""
    if not isinstance(include, list) or not include:
        return [f"'include' must be a non-empty list, got {include!r}"]
    errors = []
    for index, clause in enumerate(include):
        where = f"include[{index}]"
        errors += _check_clause(where, clause, CLAUSE_KEYS, classes)
        if not isinstance(clause, dict):
            continue
        if "color" in clause and clause["color"] not in COLORS:
            errors.append(f"{where}: unknown color {clause['color']!r} (expected one of {list(COLORS)})")
        if "position" in clause:
            errors += _check_position(where, clause["position"], index)
    return errors


def _check_exclude(exclude: Any, classes: Collection[str] | None) -> list[str]:
    """A list of ``{class, count}`` clauses."""
    if not isinstance(exclude, list):
        return [f"'exclude' must be a list, got {exclude!r}"]
    errors = []
    for index, clause in enumerate(exclude):
        errors += _check_clause(f"exclude[{index}]", clause, EXCLUDE_KEYS, classes)
    return errors


def _parse_geneval_line(text: str, classes: Collection[str] | None) -> tuple[Any, list[str]]:
    """One JSON line as a GenEval record, and what is wrong with it."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return None, [f"invalid JSON ({error.msg} at column {error.colno})"]
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {type(record).__name__}"]
    errors = []
    if record.get("tag") not in TASKS:
        errors.append(f"unknown tag {record.get('tag')!r} (expected one of {list(TASKS)})")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        errors.append(f"'prompt' must be a non-empty string, got {prompt!r}")
    errors += _check_include(record.get("include"), classes)
    if "exclude" in record:
        errors += _check_exclude(record["exclude"], classes)
    return record, errors


def load_geneval_metadata(path: str | Path, classes: Collection[str] | None = None) -> list[dict[str, Any]]:
    """GenEval records from a JSON-lines file, every line validated.

    Args:
        path: the ``.jsonl`` file.
        classes: when given, every include/exclude class must be one of these.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        PromptSetError: some lines are malformed (all of them are named), or there are none.
    """
    return _load(path, lambda text: _parse_geneval_line(text, classes))


# ------------------------------------------------------------------------------ OCR and plain


def _parse_ocr_line(text: str) -> tuple[dict[str, str] | None, list[str]]:
    """One OCR prompt and its target text, and what is wrong with it."""
    target = extract_quoted_text(text)
    if target is None:
        return None, ["no pair of double quotes around the text to render"]
    if not target.strip():
        return None, ["empty text between the first pair of double quotes"]
    return {"prompt": text, "text": target}, []


def load_ocr_prompts(path: str | Path) -> list[dict[str, str]]:
    """``[{"prompt", "text"}, ...]`` from an OCR prompt file (one prompt a line).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        PromptSetError: lines without quoted text or not UTF-8 (all named), or no prompts.
    """
    return _load(path, _parse_ocr_line)


def load_plain_prompts(path: str | Path) -> list[dict[str, str]]:
    """``[{"prompt"}, ...]`` from a one-prompt-a-line file (PickScore style).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        PromptSetError: lines that are not UTF-8 (all named), or no prompts.
    """
    return _load(path, lambda text: ({"prompt": text}, []))


# ------------------------------------------------------------------------------ public sets


def load_object_names(path: str | Path) -> list[str]:
    """Class names, one a line (GenEval's ``object_names.txt``)."""
    return [record["prompt"] for record in load_plain_prompts(path)]


def validate_benchmarks(root: str | Path) -> dict[str, int]:
    """Parse and validate the public prompt sets under ``root``; records per set.

    Checks every file in ``BENCHMARK_FILES`` (keys of the result are its names, e.g.
    ``geneval_evaluation_metadata``) and, when ``geneval/object_names.txt`` exists, that every
    GenEval class is one of its names.

    Raises:
        FileNotFoundError: some files are missing (all of them are named).
        PromptSetError: the first malformed file, with all its bad lines.
    """
    root = Path(root)
    missing = [str(root / rel) for rel in BENCHMARK_FILES.values() if not (root / rel).is_file()]
    if missing:
        raise FileNotFoundError(f"public prompt sets missing under {root}: {', '.join(missing)}")
    names = root / OBJECT_NAMES
    classes = set(load_object_names(names)) if names.is_file() else None
    counts: dict[str, int] = {}
    for name, rel in BENCHMARK_FILES.items():
        if name.startswith("geneval_"):
            counts[name] = len(load_geneval_metadata(root / rel, classes))
        elif name.startswith("ocr_"):
            counts[name] = len(load_ocr_prompts(root / rel))
        else:
            counts[name] = len(load_plain_prompts(root / rel))
    return counts
