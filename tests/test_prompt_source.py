"""The RL prompt stream: seeded epochs, resumable state, and the fixed prompt pool."""

from __future__ import annotations

import pytest

from star.rl.prompt_source import PromptSource, prompt_pool

RECORDS = [{"prompt": f"prompt {i}", "tag": "single_object"} for i in range(40)]


def test_pool_is_a_seeded_subset_and_zero_keeps_everything() -> None:
    pool = prompt_pool(RECORDS, 8, seed=3)
    assert len(pool) == 8 and len({r["prompt"] for r in pool}) == 8
    assert all(r in RECORDS for r in pool)
    assert pool == prompt_pool(RECORDS, 8, seed=3)  # every rank draws the same pool
    assert pool != prompt_pool(RECORDS, 8, seed=4)
    assert prompt_pool(RECORDS, 0, seed=3) is RECORDS


def test_pool_larger_than_the_prompt_set_names_the_knob() -> None:
    with pytest.raises(ValueError, match=r"train.prompt_pool = 41 exceeds the 40 training prompts"):
        prompt_pool(RECORDS, 41, seed=0)


def test_stream_covers_an_epoch_before_repeating_and_resumes() -> None:
    source = PromptSource(prompt_pool(RECORDS, 6, seed=0), seed=1)
    epoch = source.next(6)
    assert sorted(r["prompt"] for r in epoch) == sorted(r["prompt"] for r in prompt_pool(RECORDS, 6, seed=0))
    state = source.state_dict()
    following = source.next(9)
    resumed = PromptSource(prompt_pool(RECORDS, 6, seed=0), seed=1)
    resumed.load_state_dict(state)
    assert resumed.next(9) == following
