"""The trainer loop: every algorithm runs, resume is bit for bit, two processes stay in sync,
trained variants save and load through diffusers' LoRA format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pipelines.shared_server import free_port
from star.config import load_config
from star.models.lora import trainable_state
from star.models.variants import load_variant, save_variant, sort_safetensors_metadata
from star.rl.prompt_source import prompt_pool
from star.rl.trainer import ResumeMismatch, Trainer, config_differences
from star.sampling.rollout import trained_steps
from star.sampling.sampler import sample_ode
from tests.conftest import GENEVAL_RECORDS, MICRO, REPO, BrightnessReward, micro_pipeline, straight_and_resumed

SMALL = {"iterations": 4, "prompts_per_iteration": 2, "group_size": 2, "steps": 3, "minibatch_size": 2,
         "checkpoint_every": 1}


def _trainer(tmp: Path, **train: object) -> Trainer:
    cfg = load_config(MICRO, overrides={"train": SMALL | train})
    return Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp, progress=False)


@pytest.mark.parametrize(
    "train", [{"allocation": "none"}, {"allocation": "uniform_region"}, {"allocation": "temporal"},
              {"allocation": "spatial"}, {"allocation": "shuffled"}, {"allocation": "star", "lora_rank": 0},
              {"algorithm": "fdfo"}, {"algorithm": "nft", "allocation": "none"},
              {"algorithm": "dgpo", "allocation": "none", "dgpo": {"trunc_steps": 2, "timesteps": 2}}],
    ids=["none", "uniform_region", "temporal", "spatial", "shuffled", "star-full-ft", "fdfo", "nft", "dgpo"],
)
@pytest.mark.slow
def test_every_algorithm_updates_the_policy(tmp_path: Path, train: dict) -> None:
    trainer = _trainer(tmp_path, iterations=1, **train)
    before = trainable_state(trainer.transformer)
    metrics = trainer.step()
    after = trainable_state(trainer.transformer)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    forward = train.get("algorithm") in ("nft", "dgpo")  # no likelihood ratio: no approx_kl
    keys = ("reward_mean", "loss", "kl", "grad_norm") if forward else ("clip_fraction", "approx_kl")
    for key in ("reward_mean", "loss", "grad_norm", "advantage_std", *keys):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    # the progress bar names what trains: FDFO, not the (unused) allocation its config carries
    assert trainer.method == train.get("algorithm", train.get("allocation"))


def test_trained_steps_are_the_first_fraction_of_the_schedule() -> None:
    assert trained_steps(None, 10, 0.99) == list(range(9))  # Flow-GRPO: 9 of 10, never the last
    assert trained_steps(None, 4, 0.99) == [0, 1, 2]
    assert trained_steps(None, 4, 1.0) == [0, 1, 2, 3]
    assert trained_steps([1, 2, 3], 4, 0.99) == [1, 2]


def test_the_update_trains_exactly_the_trained_steps(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, iterations=1, steps=4, train_fraction=0.99)
    seen: list[int] = []
    original = trainer.objective.step_loss

    def recording(policy, rollouts, targets, t):  # noqa: ANN001, ANN202
        seen.append(t)
        return original(policy, rollouts, targets, t)

    trainer.objective.step_loss = recording
    trainer.step()
    assert sorted(set(seen)) == [0, 1, 2] and len(seen) == 3 * 2  # 2 minibatches, step 3 never


class CornerReward(BrightnessReward):
    """Brightness, and a detector that always finds the core object in the top-left quarter."""

    def score_and_locate(self, images, prompts, metadata):  # noqa: ANN001, ANN201
        side = images.shape[-1]
        return self.score(images, prompts, metadata), [[(0, 0, side // 2, side // 2)] for _ in images]


@pytest.mark.slow
def test_oracle_and_star_read_the_rewards_detections(tmp_path: Path) -> None:
    """The trainer sets each rollout's core-object coverage from the reward's detections, the
    oracle puts its weight there, and capturing modes log their maps' localisation on it."""
    for allocation in ("oracle", "star"):
        cfg = load_config(MICRO, overrides={"train": SMALL | {"iterations": 1, "allocation": allocation}})
        trainer = Trainer(cfg, micro_pipeline(), CornerReward(), GENEVAL_RECORDS, tmp_path / allocation, progress=False)
        rollouts = trainer.sample(GENEVAL_RECORDS)
        trainer.score(rollouts)
        grid = rollouts.latents.shape[-1] // 2  # micro patch size 2
        expected = torch.zeros(grid, grid)
        expected[: grid // 2, : grid // 2] = 1.0
        torch.testing.assert_close(rollouts.core_coverage, expected.flatten().expand(4, -1))
        targets = trainer.objective.prepare(rollouts, torch.tensor([0.1, 0.7, 0.4, 0.2]))
        on, off = targets.weights[..., expected.flatten() > 0], targets.weights[..., expected.flatten() == 0]
        metrics = trainer.step()
        assert {f"localisation_t{t}" for t in rollouts.trained} <= set(metrics)
        if allocation == "oracle":
            assert (on > 3.0).all() and (off < 0.5).all()
            assert metrics["localisation_t0"] > 3.0
    with pytest.raises(ValueError, match="cannot locate"):
        cfg = load_config(MICRO, overrides={"train": SMALL | {"allocation": "oracle"}})
        Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp_path / "no", progress=False).step()


@pytest.mark.slow
@pytest.mark.parametrize("train", [{}, {"accumulation_steps": 3}], ids=["default", "accumulation-across-the-stop"])
def test_resume_continues_bit_for_bit(tmp_path: Path, train: dict) -> None:
    straight, _, resumed = straight_and_resumed(lambda work: _trainer(work, **train), tmp_path)
    a, b = trainable_state(straight.transformer), trainable_state(resumed.transformer)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.ema.state_dict().keys() == resumed.ema.state_dict().keys()
    assert all(torch.equal(x, y) for x, y in zip(straight.ema.shadow_params, resumed.ema.shadow_params, strict=True))
    assert [h["reward_mean"] for h in straight.history] == [h["reward_mean"] for h in resumed.history]


@pytest.mark.slow
def test_accumulation_steps_the_optimizer_every_n_minibatches_and_at_the_end(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, accumulation_steps=3, iterations=2)  # 2 minibatches per iteration
    before = trainable_state(trainer.transformer)
    first = trainer.step()
    assert trainer.pending == 2 and "grad_norm" not in first
    assert all(torch.equal(before[k], v) for k, v in trainable_state(trainer.transformer).items())
    second = trainer.step()  # a step after the third minibatch, and one for the final minibatch
    assert trainer.pending == 0 and second["grad_norm"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trainable_state(trainer.transformer).items())


@pytest.mark.slow
def test_accumulated_minibatches_equal_one_large_minibatch(tmp_path: Path) -> None:
    whole = _trainer(tmp_path / "whole", minibatch_size=4, iterations=2, train_fraction=1.0)
    halves = _trainer(tmp_path / "halves", minibatch_size=2, accumulation_steps=2, iterations=2, train_fraction=1.0)
    whole_metrics, halves_metrics = whole.step(), halves.step()
    # the same gradient, not a multiple: Adam would hide a wrong scale, the norm does not
    assert halves_metrics["grad_norm"] == pytest.approx(whole_metrics["grad_norm"], rel=1e-5)
    a, b = trainable_state(whole.transformer), trainable_state(halves.transformer)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if "lora_B" in k)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_checkpoint_of_another_training_config_is_refused_naming_each_key(tmp_path: Path) -> None:
    first = _trainer(tmp_path, iterations=1)
    first.train()
    first.save_checkpoint()
    with pytest.raises(ResumeMismatch) as refused:
        _trainer(tmp_path, iterations=1, lr=0.5, group_size=3)
    message = str(refused.value)
    assert f"train.lr: {first.cfg.train.lr!r} in the checkpoint, 0.5 now" in message
    assert "train.group_size: 2 in the checkpoint, 3 now" in message
    assert f"delete {tmp_path}" in message and "iteration 1" in message


def test_checkpoint_trained_from_other_base_weights_is_refused(tmp_path: Path) -> None:
    """A rebuilt embedded base keeps its path and config: only its weights tell it apart."""
    first = _trainer(tmp_path, iterations=2)
    first.step()
    first.save_checkpoint()
    rebuilt = micro_pipeline()
    with torch.no_grad():
        next(rebuilt.transformer.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(ResumeMismatch,
                       match=rf"base weights: '{first.base_weights}' in the checkpoint, '[0-9a-f]{{16}}' now"):
        Trainer(first.cfg, rebuilt, BrightnessReward(), GENEVAL_RECORDS, tmp_path, progress=False)
    assert Trainer(first.cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp_path,
                   progress=False).iteration == 1


def test_weights_digest_tells_apart_one_changed_value_a_dtype_and_a_name() -> None:
    from star.rl.checkpoint import weights_digest

    def layer(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Linear(3, 2).to(dtype)

    assert weights_digest(layer()) == weights_digest(layer())
    changed = layer()
    with torch.no_grad():
        changed.bias[1] = torch.nextafter(changed.bias[1], torch.tensor(2.0))  # one ulp
    renamed = torch.nn.Sequential(layer())
    digests = {weights_digest(m) for m in (layer(), changed, layer(torch.bfloat16), renamed)}
    assert len(digests) == 4


def test_resume_survives_edits_that_do_not_change_the_trajectory(tmp_path: Path) -> None:
    """eval, paths, tracking and the other variants may change between a crash and its resume."""
    interrupted = _trainer(tmp_path, iterations=3)
    interrupted.step()
    interrupted.save_checkpoint()
    cfg = load_config(MICRO, overrides={
        "train": SMALL | {"iterations": 3}, "eval": {"steps": 3}, "paths": {"reports": str(tmp_path / "r")},
        "tracking": {"experiment": "elsewhere"},
        "studies": {"default": {"variants": {"extra": {"allocation": "spatial"}}}},
    })
    resumed = Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp_path, progress=False)
    assert resumed.iteration == 1
    assert resumed.seconds() >= resumed.seconds_before > 0, "the interrupted run's time is counted"


def test_config_differences_lists_leaves_with_dotted_keys() -> None:
    old = {"train": {"lr": 1.0, "capture_blocks": [1, 2]}, "seed": 0}
    new = {"train": {"lr": 2.0, "capture_blocks": [1, 2], "gamma": 2}, "seed": 1}
    assert config_differences(old, new) == [
        "seed: 0 in the checkpoint, 1 now",
        "train.gamma: '<absent>' in the checkpoint, 2 now",
        "train.lr: 1.0 in the checkpoint, 2.0 now",
    ]


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tmp_path: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()),
               str(REPO / "tests" / "scripts" / "two_rank_train.py"), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["weights"].keys() == rank1["weights"].keys()
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    single = micro_pipeline()
    changed = any(not torch.equal(v, torch.zeros_like(v)) for k, v in rank0["weights"].items() if "lora_B" in k)
    assert changed and single is not None
    # the ranks sampled different prompts/noise, so their rewards differ but the logged mean is shared
    assert rank0["history"][0]["reward_mean"] == rank1["history"][0]["reward_mean"]


@pytest.mark.slow
def test_variant_round_trip_through_diffusers_lora(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path / "work", iterations=2)
    trainer.train()
    trainer.final_weights()
    prompts, seeds = [r["prompt"] for r in GENEVAL_RECORDS], [0, 1]
    trained_images = sample_ode(trainer.pipe, prompts, seeds, steps=3, guidance_scale=2.0)
    save_variant(trainer.pipe, tmp_path / "variant", {"allocation": "star"})
    fresh = load_variant(micro_pipeline(), tmp_path / "variant")
    torch.testing.assert_close(sample_ode(fresh, prompts, seeds, steps=3, guidance_scale=2.0), trained_images,
                               atol=1e-5, rtol=1e-4)
    base_images = sample_ode(micro_pipeline(), prompts, seeds, steps=3, guidance_scale=2.0)
    assert (base_images - trained_images).abs().max() > 1e-5


def test_saved_lora_bytes_do_not_depend_on_metadata_order(tmp_path: Path) -> None:
    """safetensors writes ``__metadata__`` in a per-process hash order; DVC hashes the bytes."""
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    metadata = {"format": "pt", "lora_adapter_metadata": "{}", "extra": "x"}
    paths = [tmp_path / "forward.safetensors", tmp_path / "reversed.safetensors"]
    for path, items in zip(paths, [list(metadata.items()), list(reversed(metadata.items()))]):
        header = json.dumps({"__metadata__": dict(items), "w": {"dtype": "F32", "shape": [2, 3],
                                                                 "data_offsets": [0, 24]}}).encode()
        path.write_bytes(len(header).to_bytes(8, "little") + header + tensors["w"].numpy().tobytes())
        sort_safetensors_metadata(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with safe_open(str(paths[1]), framework="pt") as reader:
        assert reader.metadata() == metadata
        assert torch.equal(reader.get_tensor("w"), tensors["w"])


OCR_AND_GENEVAL_RECORDS = [
    {"prompt": 'a photo of a red star and a sign that says "AB"', "tag": "colors",
     "include": [{"class": "star", "count": 1, "color": "red"}]},
    {"prompt": 'a photo of two circles and a sign that says "7"', "tag": "counting",
     "include": [{"class": "circle", "count": 2}]},
]


@pytest.mark.parametrize(
    "rewards",
    [{"task": "geneval"}, {"task": "ocr"}, {"task": "pickscore"},
     {"task": "geneval", "weights": {"geneval": 1.0, "ocr": 0.5, "pickscore": 0.1}}],
    ids=["geneval", "ocr", "pickscore", "mix"],
)
def test_trainer_runs_on_each_reward_chosen_in_params(tmp_path: Path, rewards: dict) -> None:
    """The real reward backends (world detector, rapidocr, a world CLIP saved and loaded as
    PickScore) built from the config drive a training iteration."""
    from star.scoring import build_reward
    from star.world.clip import WORLD_CLIP_DIR, build_world_clip

    cfg = load_config(MICRO, overrides={"train": SMALL | {"iterations": 1}, "rewards": rewards})
    build_world_clip(cfg.rewards.world_clip, cfg.world.image_size, seed=0).save_pretrained(tmp_path / WORLD_CLIP_DIR)
    reward = build_reward(cfg.rewards, tmp_path)
    trainer = Trainer(cfg, micro_pipeline(), reward, OCR_AND_GENEVAL_RECORDS, tmp_path / "work", progress=False)
    metrics = trainer.step()
    assert torch.isfinite(torch.tensor(metrics["reward_mean"])) and metrics["iteration"] == 1
    if rewards["task"] in ("geneval", "ocr") and "weights" not in rewards:
        assert 0.0 <= metrics["reward_mean"] <= 1.0


def test_atomic_directory_keeps_the_old_model_when_writing_fails(tmp_path: Path) -> None:
    from star.files import atomic_directory

    target = tmp_path / "model"
    atomic_directory(target, lambda path: (path.mkdir(), (path / "weights").write_text("old")))

    def crash(path: Path) -> None:
        path.mkdir()
        (path / "weights").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_directory(target, crash)
    assert (target / "weights").read_text() == "old"
    atomic_directory(target, lambda path: (path.mkdir(), (path / "weights").write_text("new")))
    assert (target / "weights").read_text() == "new" and not (tmp_path / "model.partial").exists()


@pytest.mark.slow
def test_sde_window_adds_noise_and_trains_only_inside_the_window(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, steps=6, sde_window=2, same_noise_per_group=True, iterations=1)
    rollouts = trainer.sample(GENEVAL_RECORDS[:2])
    start = rollouts.sde_steps[0]
    assert rollouts.sde_steps == [start, start + 1] and 0 <= start <= 1  # inside the first half
    outside = [t for t in range(6) if t not in rollouts.sde_steps]
    assert rollouts.log_probs[:, outside].abs().max() == 0
    assert rollouts.log_probs[:, rollouts.sde_steps].abs().min() > 0
    # same initial noise per group: the group's rollouts agree until the window's noise
    assert torch.equal(rollouts.latents[0, : start + 1], rollouts.latents[1, : start + 1])
    assert not torch.equal(rollouts.latents[0, start + 1], rollouts.latents[1, start + 1])
    trained: list[int] = []
    step_loss = trainer.objective.step_loss
    trainer.objective.step_loss = lambda policy, r, targets, t: (trained.append(t), step_loss(policy, r, targets, t))[1]
    trainer.update(rollouts, trainer.objective.prepare(rollouts, torch.tensor([0.0, 1.0, 0.5, 0.25])))
    assert trained and set(trained) <= set(rollouts.sde_steps)


def test_prompt_pool_fixes_the_prompts_the_trainer_draws(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, prompt_pool=2, iterations=1)
    drawn = {r["prompt"] for _ in range(6) for r in trainer.prompts.next(2)}
    assert drawn == {r["prompt"] for r in prompt_pool(GENEVAL_RECORDS, 2, trainer.cfg.train.pool_seed)}


def test_a_fixed_pool_seed_gives_every_seed_the_same_prompts(tmp_path: Path) -> None:
    def pool(seed: int, pool_seed: int | None) -> frozenset[str]:
        cfg = load_config(MICRO, overrides={"seed": seed, "train": SMALL | {"prompt_pool": 1, "pool_seed": pool_seed,
                                                                             "prompts_per_iteration": 1}})
        trainer = Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp_path, progress=False)
        return frozenset(r["prompt"] for r in trainer.prompts.records)

    assert pool(0, 5) == pool(1, 5)
    assert len({pool(seed, None) for seed in range(6)}) == 2, "without a pool seed each seed draws its own"


def test_variants_of_one_seed_are_paired_and_another_seed_is_not(tmp_path: Path) -> None:
    """The study's pairing: variants with the same seed draw the same prompts, the
    same initial noise and the same LoRA initialisation; another seed changes all three."""
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    records = [{"prompt": f"a photo of a {c} star", "tag": "colors",
                "include": [{"class": "star", "count": 1, "color": c}]}
               for c in colours]

    def first_draws(seed: int, allocation: str) -> tuple[list[str], torch.Tensor, dict[str, torch.Tensor]]:
        cfg = load_config(MICRO, overrides={"seed": seed,
                                            "train": SMALL | {"allocation": allocation, "prompt_pool": 4}})
        trainer = Trainer(cfg, micro_pipeline(), BrightnessReward(), records, tmp_path / f"{allocation}-{seed}",
                          progress=False)
        prompts = [r["prompt"] for _ in range(3) for r in trainer.prompts.next(2)]
        rollouts = trainer.sample(trainer.prompts.next(2))
        return prompts, rollouts.latents[:, 0], trainable_state(trainer.transformer)

    none, star, other = first_draws(0, "none"), first_draws(0, "star"), first_draws(1, "none")
    assert none[0] == star[0] and torch.equal(none[1], star[1])
    assert none[2].keys() == star[2].keys() and all(torch.equal(none[2][k], star[2][k]) for k in none[2])
    assert none[0] != other[0] and not torch.equal(none[1], other[1])
    assert any(not torch.equal(none[2][k], other[2][k]) for k in none[2])


def test_figures_are_logged_from_step_0_and_leave_the_trajectory_alone(tmp_path: Path) -> None:
    """Figures at 0 (the starting weights), every log_images_every and at the last iteration; the
    weights a run ends with do not depend on how often it draws them."""
    logged: list[tuple[str, int]] = []
    often = _trainer(tmp_path / "often", allocation="star", iterations=5, log_images_every=2)
    often.on_artifact = lambda path, step: logged.append((path.stem.rsplit("_", 1)[0], step))
    often.train()
    assert sorted(logged) == sorted((key, step) for key in ("samples", "allocation") for step in (0, 2, 4))
    never = _trainer(tmp_path / "never", allocation="star", iterations=5, log_images_every=100)
    never.train()
    for name, tensor in trainable_state(often.transformer).items():
        assert torch.equal(tensor, trainable_state(never.transformer)[name]), name


def _draws(generator: torch.Generator) -> list[object]:
    import random

    import numpy as np

    cuda = torch.rand(3, device="cuda").tolist() if torch.cuda.is_available() else None
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
            torch.rand(3, generator=generator).tolist(), cuda]


def test_the_checkpointed_rng_state_holds_every_stream_and_restores_it() -> None:
    from star.rl import checkpoint

    generator = checkpoint.seed_everything(7)
    state = checkpoint.rng_state(generator)
    assert set(state) == {"torch", "cuda", "numpy", "python", "generator"}
    assert (state["cuda"] is None) == (not torch.cuda.is_available())
    first = _draws(generator)
    checkpoint.restore_rng_state(state, generator)
    assert _draws(generator) == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's RNG state needs a GPU")
def test_a_resumed_run_restores_the_cuda_rng_state(tmp_path: Path) -> None:
    from star.rl import checkpoint

    generator = checkpoint.seed_everything(3)
    torch.rand(5, device="cuda")
    checkpoint.atomic_save({"rng": checkpoint.rng_state(generator)}, tmp_path / "state.ckpt")
    expected = torch.rand(5, device="cuda")
    checkpoint.seed_everything(99)  # another process's state, as a fresh start has
    checkpoint.restore_rng_state(checkpoint.load(tmp_path / "state.ckpt")["rng"], generator)
    assert torch.equal(torch.rand(5, device="cuda"), expected)


def test_the_ema_warms_up_and_averages_by_its_formula() -> None:
    """θ_ema ← d_n θ_ema + (1 − d_n) θ with d_n = min(d, n / (9 + n)), bit for bit (docs/method.md §0)."""
    from star.rl.ema import EMA

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    module[0].bias.requires_grad_(False)  # a frozen parameter has no shadow
    ema = EMA(module, 0.9)
    expected = [p.detach().clone() for p in module.parameters() if p.requires_grad]
    for n in range(1, 30):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p))
        ema.step()
        decay = min(0.9, n / (9 + n))
        expected = [e.lerp(p.detach(), 1 - decay) for e, p in zip(expected, ema.trained)]
        assert all(torch.equal(s, e) for s, e in zip(ema.shadow_params, expected, strict=True)), n
    saved = ema.state_dict()
    fresh = EMA(module, 0.9)
    fresh.load_state_dict(saved)
    assert fresh.optimization_step == 29 and all(torch.equal(a, b) for a, b in zip(fresh.shadow_params, expected))
    fresh.copy_to()
    assert all(torch.equal(p, e) for p, e in zip(fresh.trained, expected))
    with pytest.raises(KeyError, match="holds 1 tensors"):
        fresh.load_state_dict(saved | {"shadow_params": expected[:1]})
    with pytest.raises(ValueError, match="decay"):
        EMA(module, 1.0)
