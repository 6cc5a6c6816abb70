"""Public prompt sets through ``prompt_sets``: GenEval's templates, materialisation by
``prepare``, and the micro model trained and evaluated on prompts read from the public files
(``../shared/benchmarks``) through the same code path as the study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rewards.geneval import GenEvalReward
from star.config import ConfigError, PromptSetsConfig, load_config
from star.data.geneval_templates import make_plural, prompt_for, template_training_set, with_article
from star.data.prompt_sets import PromptSetError, load_geneval_metadata, load_object_names, load_ocr_prompts
from star.data.task_prompts import PromptSetConfigError, materialise_prompt_sets
from star.rl.prompt_source import load_task_prompts
from star.world.detector import detect
from star.world.prompts import generate_prompt_sets
from star.world.vocab import SHAPES
from tests.conftest import MICRO, micro_overrides
from tests.tiny_models import save_tiny_detector

WORLD = generate_prompt_sets(seed=0, n_train=12, n_test=6)
OCR_TRAIN = ['a sign that says "OPEN"', 'a poster with the words "STAR 2026"', 'a mug printed with "hello"']


def public_sets(bench: Path, ocr_train: Path, per_tag: int = 5) -> dict:
    """``prompt_sets`` overrides: every test set from the public files, GenEval training prompts
    from its templates, OCR training prompts from a user file, PickScore's public training set."""
    return {
        "geneval": {"train": "templates", "test": str(bench / "geneval/evaluation_metadata.jsonl"),
                    "object_names": str(bench / "geneval/object_names.txt"), "templates_per_tag": per_tag},
        "ocr": {"train": str(ocr_train), "test": str(bench / "ocr/test.txt")},
        "pickscore": {"train": str(bench / "pickscore/train.txt"), "test": str(bench / "pickscore/test.txt")},
    }


@pytest.fixture
def ocr_train(tmp_path: Path) -> Path:
    path = tmp_path / "ocr_train.txt"
    path.write_text("\n".join(OCR_TRAIN) + "\n")
    return path


# ------------------------------------------------------------------------------ GenEval's templates


def test_templates_reproduce_every_benchmark_prompt(bench: Path) -> None:
    records = load_geneval_metadata(bench / "geneval/evaluation_metadata.jsonl")
    assert len(records) == 553
    assert [prompt_for(r) for r in records] == [r["prompt"] for r in records]
    assert (with_article("orange"), make_plural("bus"), make_plural("sheep")) == ("an orange", "buses", "sheeps")


def test_template_training_set_excludes_every_evaluation_prompt(bench: Path, tmp_path: Path) -> None:
    names = load_object_names(bench / "geneval/object_names.txt")
    test = load_geneval_metadata(bench / "geneval/evaluation_metadata.jsonl")
    records, written = template_training_set(names, 300, seed=3, exclude_prompts=[r["prompt"] for r in test])
    # every single-object prompt is a test prompt; 80 classes x 3 counts = 240 counting prompts, 80 in the test set
    assert written == {"single_object": 0, "two_object": 300, "counting": 160, "colors": 300, "position": 300,
                       "color_attr": 300}
    prompts = [r["prompt"] for r in records]
    assert len(set(prompts)) == len(prompts) and not set(prompts) & {r["prompt"] for r in test}
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_geneval_metadata(path, set(names)) == records  # valid GenEval metadata, known classes
    assert not any(c.get("color") and c["class"] == "person" for r in records for c in r["include"])
    assert template_training_set(names, 300, seed=3, exclude_prompts=[r["prompt"] for r in test])[0] == records
    assert template_training_set(names, 300, seed=4, exclude_prompts=[])[0] != records


# ------------------------------------------------------------------------------ the prompt_sets section


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"ocr": {"test": "ocr.txt"}}, r"prompt_sets\.ocr\.train is 'world' but prompt_sets\.ocr\.test is 'ocr.txt'"),
        ({"geneval": {"train": "g.jsonl"}}, r"prompt_sets\.geneval\.test is 'world'"),
        ({"geneval": {"train": "templates", "test": "g.jsonl"}}, r"needs prompt_sets\.geneval\.object_names"),
        ({"pickscore": {"train": "templates", "test": "p.txt"}}, r"prompt_sets\.pickscore\.train = 'templates'"),
        ({"ocr": {"trian": "o.txt"}}, r"prompt_sets\.ocr\.trian = 'o.txt' \(from \S*\): Extra inputs"),
    ],
)
def test_config_rejects_inconsistent_sets_naming_the_key(sets: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(MICRO, {"prompt_sets": sets})


def test_materialise_writes_the_public_files(bench: Path, ocr_train: Path, tmp_path: Path) -> None:
    sets = PromptSetsConfig.model_validate(public_sets(bench, ocr_train))
    out = tmp_path / "prompts"
    counts = materialise_prompt_sets(sets, WORLD, out)
    assert load_task_prompts(out, "geneval", "test") == load_geneval_metadata(
        bench / "geneval/evaluation_metadata.jsonl")
    assert counts["geneval_test"] == 553 and counts["geneval_train"] == 4 * 5 + 5  # counting: 5 of its 160
    assert counts["geneval_train_templates_single_object"] == 0 and counts["geneval_train_test_overlap"] == 0
    ocr = load_task_prompts(out, "ocr", "test")
    assert [r["prompt"] for r in ocr] == [r["prompt"] for r in load_ocr_prompts(bench / "ocr/test.txt")]
    assert [r["text"] for r in load_task_prompts(out, "ocr", "train")] == ["OPEN", "STAR 2026", "hello"]
    assert (counts["ocr_test"], counts["pickscore_train"], counts["pickscore_test"]) == (1018, 25432, 2048)
    assert 0 <= counts["pickscore_train_test_overlap"] < 2048


def test_world_sets_are_the_default(tmp_path: Path) -> None:
    counts = materialise_prompt_sets(PromptSetsConfig(), WORLD, tmp_path)
    assert load_task_prompts(tmp_path, "geneval", "train") == WORLD["geneval"]["train"]
    assert [r["prompt"] for r in load_task_prompts(tmp_path, "pickscore", "test")] == [
        r["prompt"] for r in WORLD["pickscore"]["test"]]
    assert counts["ocr_train"] == 12 and counts["geneval_train_test_overlap"] == 0


def test_missing_files_name_their_keys(bench: Path, tmp_path: Path) -> None:
    sets = PromptSetsConfig.model_validate(public_sets(bench, tmp_path / "nope.txt")
                                           | {"pickscore": {"train": "gone.txt", "test": "gone.txt"}})
    with pytest.raises(PromptSetConfigError) as error:
        materialise_prompt_sets(sets, WORLD, tmp_path / "prompts")
    assert "prompt_sets.ocr.train" in str(error.value) and "nope.txt" in str(error.value)
    assert "prompt_sets.pickscore.train" in str(error.value) and "prompt_sets.pickscore.test" in str(error.value)
    assert not (tmp_path / "prompts").exists()


def test_malformed_public_line_is_named(bench: Path, ocr_train: Path, tmp_path: Path) -> None:
    broken = tmp_path / "ocr_test.txt"
    lines = (bench / "ocr/test.txt").read_text().splitlines()
    lines[4] = "a sign without any quoted text"
    broken.write_text("\n".join(lines) + "\n")
    sets = public_sets(bench, ocr_train)
    sets["ocr"]["test"] = str(broken)
    with pytest.raises(PromptSetError, match=r"ocr_test\.txt.*\n.*line 5: no pair of double quotes"):
        materialise_prompt_sets(PromptSetsConfig.model_validate(sets), WORLD, tmp_path / "prompts")


def test_world_detector_rejects_classes_it_cannot_find(bench: Path) -> None:
    reward = GenEvalReward(detect, partial_credit=False, classes=SHAPES)
    record = load_geneval_metadata(bench / "geneval/evaluation_metadata.jsonl")[0]
    with pytest.raises(ValueError, match=r"\['bench'\].*geneval_detector: mask2former"):
        reward.score(torch.zeros(1, 3, 32, 32), [record["prompt"]], [record])


# ------------------------------------------------------------------------------ the stages on public prompts


@pytest.fixture(scope="module")
def public_study(micro_base, bench: Path, tmp_path_factory: pytest.TempPathFactory):
    """prepare on the public files, then train one iteration of `star` on GenEval's template
    prompts (scored by a tiny Mask2Former) and evaluate on the public test sets."""
    from pipelines.evaluate import evaluate
    from pipelines.prepare import prepare
    from pipelines.reward_models import reward_models
    from pipelines.train import train

    root = tmp_path_factory.mktemp("public")
    shutil.copytree(micro_base[0] / "models" / "base", root / "models" / "base")
    (root / "ocr_train.txt").write_text("\n".join(OCR_TRAIN) + "\n")
    seg, clip = save_tiny_detector(root / "detector")
    overrides = micro_overrides(root) | {
        "prompt_sets": public_sets(bench, root / "ocr_train.txt", per_tag=2),
        "rewards": {"geneval_detector": "mask2former", "detector_model": seg, "color_model": clip},
        "train": {"iterations": 1},
    }
    counts = prepare(params=str(MICRO), overrides=overrides)
    reward_models(params=str(MICRO), overrides=overrides)  # the embedded PickScore stand-in
    trained = train(variant="star", params=str(MICRO), overrides=overrides)
    evaluated = evaluate(checkpoint="star-s0", params=str(MICRO), overrides=overrides)
    return root, counts, trained, evaluated


def test_micro_model_trains_and_evaluates_on_public_prompts(public_study, bench: Path) -> None:
    root, counts, trained, evaluated = public_study
    prompts = root / "data" / "prompts"
    assert counts["geneval_test"] == 553 and counts["geneval_train"] == 4 * 2 + 2
    train_prompts = {r["prompt"] for r in load_task_prompts(prompts, "geneval", "train")}
    assert train_prompts.isdisjoint(r["prompt"] for r in load_task_prompts(prompts, "geneval", "test"))
    assert trained["iterations"] == 1 and -1 <= trained["reward_start"] <= 2  # GenEval + 0.01 PickScore (|s| <= 100)
    assert evaluated["geneval_n_images"] == 6 * 4  # the first public prompt of each tag x eval.noises
    assert 0 <= evaluated["geneval_overall"] <= 1 and 0 <= evaluated["ocr_accuracy"] <= 1
    assert evaluated["pickscore_mean"] == evaluated["pickscore_mean"]  # not NaN
    for task in ("geneval", "ocr", "pickscore"):
        assert (root / "eval" / "star-s0" / f"{task}.png").stat().st_size > 1000
