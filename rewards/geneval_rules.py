"""GenEval's official scoring rules over detections, plus Flow-GRPO-style partial credit.

Independent of the detector: a backend turns an image into ``Detection`` records (class, box,
score, colour) and everything here is pure bookkeeping over them.

Strict rules (``correct``) follow the official script, djghosh13/geneval
``evaluation/evaluate_images.py`` (``evaluate`` and ``relative_position``) and
``evaluation/summary_scores.py``, with its default options (threshold 0.3, counting threshold
0.9, max 16 objects per class, no NMS since ``max_overlap`` defaults to 1, position threshold
0.1). Differences, none of which changes a verdict on valid metadata:

- colours come from ``Detection.color`` (the backend's decision) instead of the script's CLIP
  classifier; a detection whose colour is None never matches a required colour;
- detections with equal scores keep their input order (the script's ``argsort`` is unstable);
- a position index outside ``[0, clause index)`` raises ``ValueError`` (the script would raise
  ``IndexError``, or silently wrap a negative index).

Partial credit (``partial``) follows the ``evaluate_reward`` function of Flow-GRPO's GenEval
reward server (yifan123/reward-server, ``reward_server/gen_eval.py``), whose ``score`` is the
GenEval reward Flow-GRPO trains on; see ``partial_credit`` for the exact rule and the few
deliberate differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewards.detection import Detection

THRESHOLD: float = 0.3
"""A detection counts when its score is strictly above this (all tasks but counting)."""
COUNTING_THRESHOLD: float = 0.9
"""The stricter threshold of the ``counting`` task (strictly above)."""
MAX_OBJECTS: int = 16
"""At most this many detections per class, the most confident first."""
POSITION_THRESHOLD: float = 0.1
"""Centre offsets shrink by this fraction of the summed box sizes before relations are read."""
POSITION_TOLERANCE: float = 1e-3
"""A shrunk offset below this on both axes (pixels) means "no relation at all"."""

TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

Box = tuple[float, float, float, float]
Metadata = Mapping[str, Any]
Groups = dict[str, list[Detection]]


@dataclass
class GenEvalResult:
    """Verdict on one image.

    Attributes:
        correct: the official GenEval verdict (every include clause holds, no exclude does).
        reasons: the official script's failure messages, one per failed check (empty if correct).
        partial: Flow-GRPO-style partial credit in [0, 1] (1.0 only when every count is exact
            and every colour and position holds).
        core_boxes: boxes of the kept detections of every class an include clause names (the
            prompt's core objects as the detector sees them; STAR's oracle and localisation).
    """

    correct: bool
    reasons: list[str] = field(default_factory=list)
    partial: float = 0.0
    core_boxes: list[Box] = field(default_factory=list)


# ------------------------------------------------------------------------------ detections


def confidence_threshold(tag: str) -> float:
    """The score a detection must exceed for prompts of task ``tag``."""
    return COUNTING_THRESHOLD if tag == "counting" else THRESHOLD


def filter_detections(detections: Sequence[Detection], tag: str) -> Groups:
    """Per class, the detections scoring strictly above the tag's threshold, highest score
    first, at most ``MAX_OBJECTS``; classes left with none are absent (as in the script)."""
    threshold = confidence_threshold(tag)
    groups: Groups = {}
    # sorted() is stable, so equal scores keep the backend's order
    for detection in sorted(detections, key=lambda d: -d.score):
        if detection.score > threshold:
            kept = groups.setdefault(detection.class_name, [])
            if len(kept) < MAX_OBJECTS:
                kept.append(detection)
    return groups


# ------------------------------------------------------------------------------ position


def _sign(value: float) -> float:
    """numpy's sign: -1, 0 or 1."""
    return float((value > 0) - (value < 0))


def relative_position(box_a: Box, box_b: Box) -> set[str]:
    """Relations of box A relative to box B, boxes ``(x0, y0, x1, y1)`` with y pointing down.

    The centre offset A - B is shrunk towards zero by ``POSITION_THRESHOLD`` times the summed
    box sizes on each axis; if what is left is below ``POSITION_TOLERANCE`` on both axes there is
    no relation. Otherwise the shrunk offset is divided by the norm of the *unshrunk* offset,
    and a component below -0.5 / above 0.5 gives "left of" / "right of" (x) and "above" /
    "below" (y). Overlapping or touching objects therefore often have no relation.
    Computed in float64 (the script inherits the detector's float32; this only matters within
    float32 rounding of a threshold).
    """
    box_a, box_b = tuple(map(float, box_a)), tuple(map(float, box_b))  # numpy scalars too
    offset = [(box_a[i] + box_a[i + 2]) / 2 - (box_b[i] + box_b[i + 2]) / 2 for i in (0, 1)]
    sizes = [abs(box_a[i + 2] - box_a[i]) + abs(box_b[i + 2] - box_b[i]) for i in (0, 1)]
    shrunk = [max(abs(o) - POSITION_THRESHOLD * s, 0.0) * _sign(o) for o, s in zip(offset, sizes)]
    if all(abs(v) < POSITION_TOLERANCE for v in shrunk):
        return set()
    norm = math.hypot(*offset)
    dx, dy = (v / norm for v in shrunk)
    relations: set[str] = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _position_holds(relation: str, found: Sequence[Detection], targets: Sequence[Detection]) -> set[str] | None:
    """None when every found object has ``relation`` to every target; else the relations of
    the first failing pair (the script stops at the first failure)."""
    for obj in found:
        for target in targets:
            relations = relative_position(obj.box, target.box)
            if relation not in relations:
                return relations
    return None


def _check_position_index(metadata: Metadata) -> None:
    """Every position clause must point at an earlier include clause."""
    for index, clause in enumerate(metadata.get("include", [])):
        if "position" in clause:
            target = clause["position"][1]
            if not isinstance(target, int) or not 0 <= target < index:
                raise ValueError(
                    f"include[{index}] position index {target!r} does not point at an earlier clause: {dict(metadata)}"
                )


# ------------------------------------------------------------------------------ strict rules


def _color_reason(clause: Mapping[str, Any], colors: list[str | None]) -> str:
    """The script's colour failure message (plus how many had no colour at all)."""
    want, cls, count = clause["color"], clause["class"], clause["count"]
    seen = [f"{colors.count(c)} {c}" for c in COLORS if c in colors]
    if None in colors:
        seen.append(f"{colors.count(None)} without colour")
    return f"expected {want} {cls}>={count}, found {colors.count(want)} {want}; and {', '.join(seen)}"


def _strict_clause(
    clause: Mapping[str, Any], groups: Groups, matched_groups: list[list[Detection] | None]
) -> tuple[list[Detection] | None, list[str]]:
    """One include clause under the official rules: (its matched objects or None, reasons)."""
    cls, count = clause["class"], clause["count"]
    found = groups.get(cls, [])[:count]
    if len(found) < count:
        return None, [f"expected {cls}>={count}, found {len(found)}"]
    if "color" in clause:
        colors = [d.color for d in found]
        if colors.count(clause["color"]) < count:
            # a colour failure ends the clause: the script checks position only while matched
            return None, [_color_reason(clause, colors)]
    if "position" in clause:
        relation, target = clause["position"]
        if matched_groups[target] is None:
            return None, [f"no target for {cls} to be {relation}"]
        actual = _position_holds(relation, found, matched_groups[target])
        if actual is not None:
            return None, [f"expected {cls} {relation} target, found {' and '.join(sorted(actual))} target"]
    return found, []


def strict_verdict(groups: Groups, metadata: Metadata) -> tuple[bool, list[str]]:
    """The official verdict on filtered detections: (correct, failure reasons).

    Include clauses are ANDed and checked in order; each records its matched objects (or None
    on failure) so a later position clause can refer to it by index. Exclude clauses are ORed:
    one fails when its class has at least ``count`` detections.
    """
    _check_position_index(metadata)
    reasons: list[str] = []
    matched_groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        matched, why = _strict_clause(clause, groups, matched_groups)
        matched_groups.append(matched)
        reasons += why
    for clause in metadata.get("exclude", []):
        found = len(groups.get(clause["class"], []))
        if found >= clause["count"]:
            reasons.append(f"expected {clause['class']}<{clause['count']}, found {found}")
    return not reasons, reasons


# ------------------------------------------------------------------------------ partial credit


def _partial_clause(
    clause: Mapping[str, Any], groups: Groups, matched_groups: list[list[Detection] | None]
) -> tuple[list[Detection] | None, list[float]]:
    """One include clause's partial-credit components and its matched objects (or None)."""
    cls, count = clause["class"], clause["count"]
    found = groups.get(cls, [])  # all of them: too many objects is penalised too
    components = [max(0.0, 1.0 - abs(count - len(found)) / count)]
    ok = len(found) == count
    if "color" in clause:
        hits = sum(d.color == clause["color"] for d in found) if ok else 0
        components.append(hits / count)  # hits <= count, so this is 1 - |count - hits| / count
        ok = ok and hits == count
    if "position" in clause:
        relation, target = clause["position"]
        holds = ok and matched_groups[target] is not None
        holds = holds and _position_holds(relation, found, matched_groups[target]) is None
        components.append(float(holds))
        ok = holds
    return (found if ok else None), components


def partial_credit(groups: Groups, metadata: Metadata) -> float:
    """Flow-GRPO's partial-credit GenEval reward on filtered detections, in [0, 1].

    For each include clause with required ``count`` and ``n`` detections of its class (all of
    them, after the threshold and the 16 cap):

    - count component ``max(0, 1 - |count - n| / count)``;
    - colour component (clause has a colour): ``hits / count`` where ``hits`` is how many of
      the ``n`` detections have the colour, but 0 unless ``n == count`` exactly;
    - position component (clause has a position): 1 if ``n == count``, the colour (if any) is
      right on all of them, the target clause matched, and every found object has the relation
      to every target object; else 0.

    A clause *matches* (and becomes a valid position target) when its count is exact and its
    colour and position components are 1. The reward is the mean of all components of all
    include clauses; exclude clauses contribute nothing (an exact count already penalises the
    extra object a counting prompt's exclude forbids).

    Differences from Flow-GRPO's ``evaluate_reward`` (the rest is the same):

    1. the count component is clipped at 0 (Flow-GRPO's goes negative once ``n > 2 * count``);
    2. a failed position check adds a single 0 (Flow-GRPO appends 0.0 and then, unconditionally,
       1.0, so a failed check there is worth one half);
    3. a clause with both a colour and a position gets one component for each (Flow-GRPO adds a
       single 0 for both when the count is wrong, and no position component when the colour
       fails); no GenEval prompt has such a clause;
    4. colours come from ``Detection.color`` (None never matches) instead of CLIP.
    """
    _check_position_index(metadata)
    components: list[float] = []
    matched_groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        matched, values = _partial_clause(clause, groups, matched_groups)
        matched_groups.append(matched)
        components += values
    return sum(components) / len(components) if components else 0.0


def evaluate_image(detections: Sequence[Detection], metadata: Metadata) -> GenEvalResult:
    """Official verdict and partial credit of one image's detections against its metadata
    (a GenEval record: ``tag``, ``include``, optional ``exclude``)."""
    groups = filter_detections(detections, metadata["tag"])
    correct, reasons = strict_verdict(groups, metadata)
    classes = dict.fromkeys(clause["class"] for clause in metadata["include"])
    boxes = [tuple(d.box) for name in classes for d in groups.get(name, [])]
    return GenEvalResult(correct=correct, reasons=reasons, partial=partial_credit(groups, metadata), core_boxes=boxes)


# ------------------------------------------------------------------------------ summary


def geneval_summary(tags: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    """Per-task accuracy for each task present (in ``TASKS`` order), ``overall`` = their mean
    (the official GenEval score: tasks weigh equally, whatever their image counts), and
    ``n_images``."""
    if len(tags) != len(correct):
        raise ValueError(f"{len(tags)} tags but {len(correct)} verdicts")
    if not tags:
        raise ValueError("no images to summarise")
    unknown = sorted(set(tags) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown GenEval tags {unknown}; expected some of {list(TASKS)}")
    summary: dict[str, float] = {}
    for task in TASKS:
        verdicts = [bool(c) for t, c in zip(tags, correct) if t == task]
        if verdicts:
            summary[task] = sum(verdicts) / len(verdicts)
    summary["overall"] = sum(summary.values()) / len(summary)
    summary["n_images"] = float(len(tags))
    return summary
