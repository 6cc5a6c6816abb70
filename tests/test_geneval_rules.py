"""GenEval's official rules and Flow-GRPO-style partial credit on hand-built detections."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rewards.detection import Detection
from rewards.geneval_rules import (
    COUNTING_THRESHOLD,
    MAX_OBJECTS,
    TASKS,
    THRESHOLD,
    evaluate_image,
    filter_detections,
    geneval_summary,
    relative_position,
)

# 20x20 boxes around a reference in the middle of a 100x100 image (y points down)
CENTRE = (40.0, 40.0, 60.0, 60.0)
AT = {
    "left of": (0.0, 40.0, 20.0, 60.0),
    "right of": (80.0, 40.0, 100.0, 60.0),
    "above": (40.0, 0.0, 60.0, 20.0),
    "below": (40.0, 80.0, 60.0, 100.0),
}


def det(cls: str, box: tuple[float, ...] = CENTRE, score: float = 0.95, color: str | None = None) -> Detection:
    return Detection(class_name=cls, box=box, score=score, color=color)  # type: ignore[arg-type]


def record(tag: str, include: list[dict[str, Any]], exclude: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"tag": tag, "include": include, "prompt": "p"}
    if exclude is not None:
        md["exclude"] = exclude
    return md


def position_record(relation: str, count_a: int = 1, count_b: int = 1) -> dict[str, Any]:
    """"an A {relation} a B", reference B first as in the official set."""
    include = [{"class": "B", "count": count_b}, {"class": "A", "count": count_a, "position": [relation, 0]}]
    return record("position", include)


def counting_record(n: int) -> dict[str, Any]:
    return record("counting", [{"class": "dog", "count": n}], [{"class": "dog", "count": n + 1}])


# ------------------------------------------------------------------------------ filtering


def test_constants_match_the_official_defaults() -> None:
    assert (THRESHOLD, COUNTING_THRESHOLD, MAX_OBJECTS) == (0.3, 0.9, 16)
    assert TASKS == ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def test_threshold_is_strict_and_order_is_by_score() -> None:
    dets = [det("dog", score=0.3), det("dog", score=0.31), det("dog", score=0.8), det("cat", score=0.1)]
    groups = filter_detections(dets, "single_object")
    assert [d.score for d in groups["dog"]] == [0.8, 0.31]
    assert "cat" not in groups  # classes with nothing kept are absent
    assert not evaluate_image([det("dog", score=0.3)], record("single_object", [{"class": "dog", "count": 1}])).correct


def test_counting_uses_the_stricter_threshold() -> None:
    dets = [det("dog", score=s) for s in (0.95, 0.92, 0.9, 0.5)]
    assert len(filter_detections(dets, "counting")["dog"]) == 2  # 0.9 itself is not above 0.9
    assert len(filter_detections(dets, "two_object")["dog"]) == 4
    assert evaluate_image(dets, counting_record(2)).correct


def test_at_most_16_per_class() -> None:
    dets = [det("dog", score=0.4 + 0.01 * i) for i in range(20)]
    kept = filter_detections(dets, "single_object")["dog"]
    assert len(kept) == MAX_OBJECTS
    assert [d.score for d in kept] == sorted((d.score for d in dets), reverse=True)[:16]
    # the cap also bounds what an exclude clause can see
    md = record("single_object", [{"class": "dog", "count": 1}], [{"class": "dog", "count": 17}])
    assert evaluate_image(dets, md).correct


# ------------------------------------------------------------------------------ tasks


def test_single_object() -> None:
    md = record("single_object", [{"class": "dog", "count": 1}])
    assert evaluate_image([det("dog"), det("cat")], md) == evaluate_image([det("dog")], md)
    result = evaluate_image([det("cat")], md)
    assert not result.correct and result.reasons == ["expected dog>=1, found 0"]
    assert result.partial == 0.0


def test_two_object() -> None:
    md = record("two_object", [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}])
    ok = evaluate_image([det("dog"), det("cat")], md)
    assert ok.correct and ok.reasons == [] and ok.partial == 1.0
    missing = evaluate_image([det("dog")], md)
    assert not missing.correct and missing.reasons == ["expected cat>=1, found 0"]
    assert missing.partial == pytest.approx(0.5)


def test_counting_with_exclude() -> None:
    md = counting_record(3)
    assert evaluate_image([det("dog")] * 3, md).correct
    too_few = evaluate_image([det("dog")] * 2, md)
    assert not too_few.correct and too_few.reasons == ["expected dog>=3, found 2"]
    too_many = evaluate_image([det("dog")] * 4, md)
    assert not too_many.correct and too_many.reasons == ["expected dog<4, found 4"]
    # a fourth dog the detector is unsure of (below 0.9) does not count
    assert evaluate_image([det("dog")] * 3 + [det("dog", score=0.85)], md).correct


def test_colors_checks_the_most_confident_objects_only() -> None:
    md = record("colors", [{"class": "car", "count": 1, "color": "red"}])
    assert evaluate_image([det("car", color="red")], md).correct
    wrong = evaluate_image([det("car", color="blue")], md)
    assert not wrong.correct and wrong.reasons == ["expected red car>=1, found 0 red; and 1 blue"]
    # the red car has the lower score, so the blue one is judged
    assert not evaluate_image([det("car", score=0.9, color="blue"), det("car", score=0.5, color="red")], md).correct


def test_color_none_never_matches() -> None:
    md = record("colors", [{"class": "car", "count": 1, "color": "red"}])
    result = evaluate_image([det("car", color=None)], md)
    assert not result.correct and "1 without colour" in result.reasons[0]


def test_color_attr() -> None:
    include = [{"class": "bag", "count": 1, "color": "pink"}, {"class": "cup", "count": 1, "color": "black"}]
    md = record("color_attr", include)
    assert evaluate_image([det("bag", color="pink"), det("cup", color="black")], md).correct
    swapped = evaluate_image([det("bag", color="black"), det("cup", color="pink")], md)
    assert not swapped.correct and len(swapped.reasons) == 2
    half = evaluate_image([det("bag", color="pink"), det("cup", color="pink")], md)
    assert not half.correct and half.partial == pytest.approx(3 / 4)


@pytest.mark.parametrize("relation", list(AT))
def test_position_each_relation(relation: str) -> None:
    dets = [det("B", CENTRE), det("A", AT[relation])]
    assert relative_position(AT[relation], CENTRE) == {relation}
    assert evaluate_image(dets, position_record(relation)).correct
    for other in set(AT) - {relation}:
        result = evaluate_image(dets, position_record(other))
        assert not result.correct
        assert result.reasons == [f"expected A {other} target, found {relation} target"]


def test_position_diagonal_holds_two_relations() -> None:
    assert relative_position((0, 0, 10, 10), (50, 50, 60, 60)) == {"left of", "above"}


def test_position_margin_makes_near_overlap_fail() -> None:
    # centres 1 px apart, margin 0.1 * (10 + 10) = 2 px: no relation at all
    a, b = (0.0, 0.0, 10.0, 10.0), (1.0, 0.0, 11.0, 10.0)
    assert relative_position(a, b) == set()
    result = evaluate_image([det("B", b), det("A", a)], position_record("left of"))
    assert not result.correct and result.reasons == ["expected A left of target, found  target"]


def test_position_margin_shrinks_before_normalising() -> None:
    # offset (-4, 3): unshrunk dx = -0.8 would be "left of"; shrunk (-2, 1) / 5 gives dx = -0.4
    a, b = (6.0, 13.0, 16.0, 23.0), (10.0, 10.0, 20.0, 20.0)
    assert relative_position(a, b) == set()
    # farther away the margin matters less: offset (-40, 3) is plainly left
    assert relative_position((-30.0, 13.0, -20.0, 23.0), b) == {"left of"}


def test_position_tolerance_on_point_boxes() -> None:
    point = (0.0, 0.0, 0.0, 0.0)
    assert relative_position((0.0015, 0.0, 0.0015, 0.0), point) == {"right of"}
    assert relative_position((0.0009, 0.0, 0.0009, 0.0), point) == set()  # below 1e-3
    assert relative_position(point, point) == set()


def test_position_accepts_numpy_boxes() -> None:
    box = tuple(np.array(AT["left of"], dtype=np.float32))
    assert relative_position(box, tuple(np.array(CENTRE, dtype=np.float32))) == {"left of"}


def test_position_against_every_matched_target() -> None:
    md = position_record("left of", count_b=2)
    far_right = (80.0, 0.0, 100.0, 20.0)
    assert evaluate_image([det("B", CENTRE), det("B", far_right), det("A", AT["left of"])], md).correct
    assert not evaluate_image([det("B", CENTRE), det("B", AT["left of"]), det("A", (0.0, 0.0, 10.0, 10.0))], md).correct


def test_position_target_group_holds_only_the_first_count_objects() -> None:
    # the second, less confident B sits left of A, but only the top B is a target
    dets = [det("B", CENTRE, 0.9), det("B", (-60.0, 40.0, -40.0, 60.0), 0.5), det("A", AT["left of"])]
    assert evaluate_image(dets, position_record("left of")).correct


def test_position_missing_target() -> None:
    result = evaluate_image([det("A", AT["left of"])], position_record("left of"))
    assert not result.correct
    assert result.reasons == ["expected B>=1, found 0", "no target for A to be left of"]
    assert result.partial == pytest.approx(1 / 3)  # B count 0, A count 1, position 0


def test_position_not_checked_after_a_colour_failure() -> None:
    include = [{"class": "B", "count": 1}, {"class": "A", "count": 1, "color": "red", "position": ["above", 0]}]
    md = record("position", include)
    result = evaluate_image([det("B", CENTRE), det("A", AT["below"], color="blue")], md)
    assert result.reasons == ["expected red A>=1, found 0 red; and 1 blue"]


def test_position_index_must_point_earlier() -> None:
    md = record("position", [{"class": "A", "count": 1, "position": ["above", 0]}])
    with pytest.raises(ValueError, match="earlier clause"):
        evaluate_image([det("A")], md)


# ------------------------------------------------------------------------------ partial credit


@pytest.mark.parametrize(
    ("found", "expected"), [(3, 1.0), (2, 2 / 3), (4, 2 / 3), (1, 1 / 3), (6, 0.0), (9, 0.0), (0, 0.0)]
)
def test_partial_counting(found: int, expected: float) -> None:
    # 1 - |3 - n| / 3, clipped at 0 (6 and 9 would be 0 and -1 unclipped)
    assert evaluate_image([det("dog")] * found, counting_record(3)).partial == pytest.approx(expected)


def test_partial_rewards_exact_counts_beyond_the_official_rule() -> None:
    md = record("two_object", [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}])
    result = evaluate_image([det("dog"), det("dog"), det("cat")], md)
    assert result.correct  # the official rule only needs at least one dog
    assert result.partial == pytest.approx(0.5)  # dog count 1 - 1/1 = 0, cat 1


def test_partial_colour_components() -> None:
    md = record("colors", [{"class": "car", "count": 2, "color": "red"}])
    assert evaluate_image([det("car", color="red")] * 2, md).partial == 1.0
    assert evaluate_image([det("car", color="red"), det("car", color="blue")], md).partial == pytest.approx(0.75)
    # wrong count: the colour component is 0 whatever the colours
    assert evaluate_image([det("car", color="red")], md).partial == pytest.approx(0.25)


def test_partial_position_failure_is_one_zero() -> None:
    dets = [det("B", CENTRE), det("A", AT["right of"])]
    assert evaluate_image(dets, position_record("left of")).partial == pytest.approx(2 / 3)
    assert evaluate_image(dets, position_record("right of")).partial == 1.0


def test_partial_is_in_unit_interval_and_one_only_when_exact() -> None:
    md = position_record("left of")
    for dets in ([], [det("A")], [det("B"), det("A", AT["left of"]), det("A", AT["left of"])]):
        result = evaluate_image(dets, md)
        assert 0.0 <= result.partial < 1.0 and not (result.partial == 1.0 and not result.correct)


# ------------------------------------------------------------------------------ summary


def test_summary_is_the_mean_of_task_accuracies() -> None:
    tags = ["single_object"] * 3 + ["counting"] * 4
    correct = [True, True, True, True, False, False, False]
    summary = geneval_summary(tags, correct)
    assert summary == {"single_object": 1.0, "counting": 0.25, "overall": 0.625, "n_images": 7.0}
    assert summary["overall"] != pytest.approx(4 / 7)  # not the mean over images


def test_summary_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown"):
        geneval_summary(["ocr"], [True])
    with pytest.raises(ValueError, match="verdicts"):
        geneval_summary(["colors"], [True, False])
    with pytest.raises(ValueError, match="no images"):
        geneval_summary([], [])
