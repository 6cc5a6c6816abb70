"""Prompt-set parsing: the real public files, and malformed files named line by line."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rewards.ocr_target import extract_quoted_text
from star.data.prompt_sets import (
    BENCHMARK_FILES,
    MAX_LISTED,
    PromptSetError,
    load_geneval_metadata,
    load_object_names,
    load_ocr_prompts,
    load_plain_prompts,
    validate_benchmarks,
)

EXPECTED_COUNTS = {
    "geneval_evaluation_metadata": 553,
    "geneval_test_metadata_x4": 2212,
    "ocr_test": 1018,
    "pickscore_train": 25432,
    "pickscore_test": 2048,
}
GOOD = {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"}



def bad_lines(error: pytest.ExceptionInfo[PromptSetError]) -> list[int]:
    """Line numbers an error message lists."""
    return [int(n) for n in re.findall(r"line (\d+):", str(error.value))]


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Objects as JSON, strings verbatim, one a line."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def with_include(*include: dict[str, Any], tag: str = "position") -> dict[str, Any]:
    return {"tag": tag, "include": list(include), "prompt": "p"}


# ------------------------------------------------------------------------------ public files


def test_validate_benchmarks_counts(bench: Path) -> None:
    assert validate_benchmarks(bench) == EXPECTED_COUNTS


@pytest.mark.parametrize(("name", "loader"), [
    ("geneval_evaluation_metadata", load_geneval_metadata),
    ("geneval_test_metadata_x4", load_geneval_metadata),
    ("ocr_test", load_ocr_prompts),
    ("pickscore_train", load_plain_prompts),
    ("pickscore_test", load_plain_prompts),
])  # fmt: skip
def test_public_file_counts(bench: Path, name: str, loader: Any) -> None:
    assert len(loader(bench / BENCHMARK_FILES[name])) == EXPECTED_COUNTS[name]


def test_official_geneval_set(bench: Path) -> None:
    names = load_object_names(bench / "geneval/object_names.txt")
    official = load_geneval_metadata(bench / "geneval/evaluation_metadata.jsonl", names)
    tags = Counter(r["tag"] for r in official)
    expected = {"position": 100, "color_attr": 100, "two_object": 99, "colors": 94, "single_object": 80, "counting": 80}
    assert tags == expected
    # the RL test set holds every official record exactly four times
    x4 = load_geneval_metadata(bench / "geneval/test_metadata_x4.jsonl")
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert Counter(map(key, x4)) == Counter({k: 4 * n for k, n in Counter(map(key, official)).items()})


def test_ocr_targets(bench: Path) -> None:
    prompts = load_ocr_prompts(bench / "ocr/test.txt")
    assert prompts[0]["text"] == "Spring Collection 2024"
    assert all(r["text"] and f'"{r["text"]}"' in r["prompt"] for r in prompts)


def test_object_names(bench: Path) -> None:
    names = load_object_names(bench / "geneval/object_names.txt")
    assert len(names) == len(set(names)) == 80 and names[0] == "person"


# ------------------------------------------------------------------------------ GenEval errors


def test_every_bad_geneval_line_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "meta.jsonl", [
        GOOD,
        '{"tag": "colors", "include": [',  # 2: bad JSON
        {**GOOD, "tag": "shapes"},  # 3: unknown tag
        with_include({"class": "car", "count": 1, "color": "teal"}, tag="colors"),  # 4: bad colour
        with_include({"class": "a", "count": 1}, {"class": "b", "count": 1, "position": ["left of", 5]}),  # 5
        with_include({"class": "dog", "count": 0}, tag="counting"),  # 6: count 0
        "",  # 7: blank, skipped
        GOOD,
    ])  # fmt: skip
    with pytest.raises(PromptSetError) as error:
        load_geneval_metadata(path)
    assert str(path) in str(error.value)
    assert bad_lines(error) == [2, 3, 4, 5, 6]
    for what in ("invalid JSON", "unknown tag 'shapes'", "unknown color 'teal'", "position index 5", "'count'"):
        assert what in str(error.value)


@pytest.mark.parametrize(("record", "what"), [
    (["not", "an", "object"], "expected a JSON object"),
    ({"tag": "colors", "include": [{"class": "car", "count": 1}]}, "'prompt'"),
    ({**GOOD, "prompt": "  "}, "'prompt'"),
    ({**GOOD, "include": []}, "'include'"),
    ({**GOOD, "include": ["dog"]}, "include[0]: expected an object"),
    (with_include({"count": 1}), "'class'"),
    (with_include({"class": "dog", "count": True}), "'count'"),
    (with_include({"class": "dog", "count": 1.0}), "'count'"),
    (with_include({"class": "dog", "count": 1, "colour": "red"}), "unknown key(s) ['colour']"),
    (with_include({"class": "a", "count": 1, "position": ["left of", 0]}), "position index 0"),
    (
        with_include({"class": "a", "count": 1}, {"class": "b", "count": 1, "position": ["left of", -1]}),
        "position index -1",
    ),
    (with_include({"class": "a", "count": 1}, {"class": "b", "count": 1, "position": ["near", 0]}), "unknown relation"),
    (with_include({"class": "a", "count": 1}, {"class": "b", "count": 1, "position": "left of"}), "'position'"),
    ({**GOOD, "exclude": {"class": "dog", "count": 2}}, "'exclude'"),
    ({**GOOD, "exclude": [{"class": "dog", "count": 0}]}, "exclude[0]: 'count'"),
])  # fmt: skip
def test_geneval_line_problems(tmp_path: Path, record: Any, what: str) -> None:
    path = write_jsonl(tmp_path / "meta.jsonl", [GOOD, record])
    with pytest.raises(PromptSetError) as error:
        load_geneval_metadata(path)
    assert bad_lines(error) == [2] and what in str(error.value)


def test_geneval_valid_position_and_extra_keys(tmp_path: Path) -> None:
    ok = with_include({"class": "a", "count": 1}, {"class": "b", "count": 2, "position": ["below", 0]})
    path = write_jsonl(tmp_path / "meta.jsonl", [{**ok, "source": "x"}, GOOD])
    assert load_geneval_metadata(path)[0]["source"] == "x"


def test_geneval_unknown_class(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "meta.jsonl", [GOOD, {**GOOD, "include": [{"class": "unicorn", "count": 1}]}])
    assert len(load_geneval_metadata(path)) == 2
    with pytest.raises(PromptSetError, match="unknown class 'unicorn'") as error:
        load_geneval_metadata(path, classes={"dog"})
    assert bad_lines(error) == [2]


def test_listing_is_capped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "meta.jsonl", ["{"] * (MAX_LISTED + 5))
    with pytest.raises(PromptSetError, match="and 5 more") as error:
        load_geneval_metadata(path)
    assert bad_lines(error) == list(range(1, MAX_LISTED + 1))


# ------------------------------------------------------------------------------ text files


@pytest.mark.parametrize(("prompt", "text"), [
    ('a sign that says "HELLO"', "HELLO"),
    ('"A" and "B"', "A"),
    ('empty ""', ""),
    ('one " quote', None),
    ("no quotes", None),
])  # fmt: skip
def test_extract_quoted_text(prompt: str, text: str | None) -> None:
    assert extract_quoted_text(prompt) == text


def test_ocr_missing_quotes_named(tmp_path: Path) -> None:
    path = tmp_path / "ocr.txt"
    path.write_text('a sign that says "OK"\nno quotes here\n\nhalf "quote\nempty "" text\nfine "Yes" here')
    with pytest.raises(PromptSetError) as error:
        load_ocr_prompts(path)
    assert str(path) in str(error.value) and bad_lines(error) == [2, 4, 5]
    assert "no pair of double quotes" in str(error.value) and "empty text" in str(error.value)


def test_plain_prompts(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("  first prompt \n\nsecond\r\n")
    assert load_plain_prompts(path) == [{"prompt": "first prompt"}, {"prompt": "second"}]


def test_plain_prompts_non_utf8_named(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"fine\nbad \xff byte\nfine again\n")
    with pytest.raises(PromptSetError, match="UTF-8") as error:
        load_plain_prompts(path)
    assert bad_lines(error) == [2]


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("\n\n")
    with pytest.raises(PromptSetError, match="no prompts"):
        load_plain_prompts(path)


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.txt"))):
        load_plain_prompts(tmp_path / "nope.txt")


# ------------------------------------------------------------------------------ validate_benchmarks


def make_benchmarks(root: Path) -> Path:
    """A tiny, valid copy of the public layout."""
    for rel in BENCHMARK_FILES.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    for name, rel in BENCHMARK_FILES.items():
        line = json.dumps(GOOD) if name.startswith("geneval") else 'a sign that says "HI"'
        (root / rel).write_text(line + "\n")
    return root


def test_validate_benchmarks_missing_files_named(tmp_path: Path) -> None:
    root = make_benchmarks(tmp_path)
    (root / "ocr/test.txt").unlink()
    (root / "pickscore/train.txt").unlink()
    with pytest.raises(FileNotFoundError) as error:
        validate_benchmarks(root)
    assert str(root / "ocr/test.txt") in str(error.value) and str(root / "pickscore/train.txt") in str(error.value)


def test_validate_benchmarks_checks_object_names(tmp_path: Path) -> None:
    root = make_benchmarks(tmp_path)
    assert validate_benchmarks(root) == dict.fromkeys(BENCHMARK_FILES, 1)
    (root / "geneval/object_names.txt").write_text("cat\n")
    with pytest.raises(PromptSetError, match="unknown class 'dog'"):
        validate_benchmarks(root)
