"""One trainer for every algorithm: sample → score → advantages → update → log.

The algorithm is the ``Objective`` (docs/method.md §4–§6): Flow-GRPO, STAR and its ablations
share ``PolicyGradientObjective`` (the ``allocation`` knob); FDFO, DiffusionNFT and DGPO have
their own (the last two with the allocation knob too). What an objective declares decides the
rollouts (SDE or ODE), whether old (EMA) weights are kept and sample, and how minibatches form. ``accelerate``
handles devices, processes (gradients all-reduced across ranks) and mixed precision; LoRA comes
from peft. Checkpoints are atomic and a resumed run continues bit for bit.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from rewards.base import Reward, can_locate, score_and_locate
from star.config import Config, TrainConfig
from star.evaluation.figures import allocation_overlay, sample_grid
from star.method.allocation import AllocationParams
from star.method.attention import AttentionCapture
from star.method.core_content import core_token_mask, text_segments
from star.method.regions import mean_localisation, token_coverage
from star.models.lora import add_lora, load_trainable_state, reference_policy, trainable_state
from star.rl import checkpoint
from star.rl.dgpo import DgpoObjective
from star.rl.ema import EMA
from star.rl.nft import NftObjective
from star.rl.objectives import FdfoObjective, Objective, Policy, PolicyGradientObjective, Targets
from star.rl.old_policy import OldPolicy
from star.rl.optim import build_optimizer
from star.rl.prompt_source import PromptSource, Record, training_pool
from star.sampling.rollout import Rollouts, initial_latents, sample_rollouts, trained_steps
from star.sampling.sampler import condition, latent_shape, sigma_schedule

MetricsCallback = Callable[[dict[str, float], int], None]
ArtifactCallback = Callable[[Path, int], None]

TRAJECTORY_SECTIONS = ("seed", "model", "train", "rewards")
"""The config keys that determine a training trajectory: a checkpoint resumes only into a run
that agrees on them (the stage's work folder is named by their hash); other keys (paths,
tracking, evaluation, other variants) may change between a crash and its resume."""


class ResumeMismatch(RuntimeError):
    """A checkpoint written by a run with another trajectory config or from other base weights."""


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or sample: the run stops, its last checkpoint is kept."""


def trajectory_config(config: dict[str, Any]) -> dict[str, Any]:
    """The ``TRAJECTORY_SECTIONS`` of a ``Config.model_dump(mode="json")``."""
    return {key: config[key] for key in TRAJECTORY_SECTIONS}


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: <old> in the checkpoint, <new> now' for every leaf where two config dumps differ
    (dotted keys; a key missing on one side reads <absent>)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in config_differences(old.get(key, "<absent>"), new.get(key, "<absent>"),
                                               f"{prefix}{key}." if prefix or key else "")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} in the checkpoint, {new!r} now"]


def build_objective(cfg: TrainConfig, patch_size: int) -> Objective:
    """The objective named by ``train.algorithm`` and ``train.allocation``."""
    if cfg.algorithm == "fdfo":
        return FdfoObjective(cfg.fdfo_clip, cfg.fdfo_base_weight)
    allocation = AllocationParams(cfg.gamma, cfg.mix, cfg.w_min, cfg.w_max, cfg.temporal_rule)
    if cfg.algorithm == "nft":
        return NftObjective(cfg.nft, cfg.allocation, allocation, patch_size, cfg.global_std, cfg.advantage_clip)
    if cfg.algorithm == "dgpo":
        return DgpoObjective(cfg.dgpo, cfg.allocation, allocation, patch_size, cfg.group_size, cfg.global_std,
                             cfg.advantage_clip)
    return PolicyGradientObjective(
        cfg.allocation, allocation, patch_size, cfg.clip_range, cfg.kl_beta,
        cfg.global_std, cfg.advantage_clip, cfg.same_noise_per_group,
    )



class Trainer:
    """RL post-training of ``pipe.transformer`` on ``records`` scored by ``reward``.

    ``work_dir`` holds the resumable checkpoint (one file per process). Callbacks receive
    per-iteration metrics with the iteration (1-based) and the paths of figures written under
    ``work_dir / "figures"`` with the iterations completed before their rollouts were drawn (0: the
    starting weights), every ``log_images_every`` and at the last iteration.
    """

    def __init__(
        self,
        cfg: Config,
        pipe: Any,
        reward: Reward,
        records: list[Record],
        work_dir: Path,
        accelerator: Accelerator | None = None,
        on_metrics: MetricsCallback | None = None,
        on_artifact: ArtifactCallback | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.train_cfg, self.pipe, self.reward = cfg, cfg.train, pipe, reward
        self.work_dir, self.on_metrics, self.on_artifact, self.progress = work_dir, on_metrics, on_artifact, progress
        self.accelerator = accelerator or Accelerator(mixed_precision=cfg.train.mixed_precision,
                                                      cpu=not torch.cuda.is_available())
        rank = self.accelerator.process_index
        checkpoint.seed_everything(cfg.seed)  # identical LoRA init on every rank
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
        pool = training_pool(records, cfg.train.prompt_pool, cfg.train.pool_seed, cfg.seed)
        self.prompts = PromptSource(pool, seed=cfg.seed * 1000 + rank)
        self.objective = build_objective(cfg.train, pipe.transformer.config.patch_size)
        self.base_weights = checkpoint.weights_digest(pipe.transformer)  # before LoRA joins it
        self._setup_model()
        self.capture = (AttentionCapture(self.transformer, cfg.train.capture_blocks)
                        if self.objective.needs_capture else None)
        # the core objects' coverage feeds the oracle, and the localisation score of captured maps
        self.locate = self.objective.needs_regions or (self.capture is not None and can_locate(reward))
        self.sigmas = sigma_schedule(pipe, cfg.train.steps, self.device)
        self.iteration = 0
        self.pending = 0  # minibatches accumulated since the last optimizer step
        self.optimizer_steps = 0
        self.history: list[dict[str, float]] = []
        self.seconds_before, self._session_start = 0.0, time.perf_counter()
        self._resume()

    # -- setup ------------------------------------------------------------------------------
    def _setup_model(self) -> None:
        cfg, pipe = self.train_cfg, self.pipe
        self.device = self.accelerator.device
        for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
            if module is not None:
                module.requires_grad_(False).to(self.device)
        self.transformer = pipe.transformer
        if cfg.lora_rank > 0:
            add_lora(self.transformer, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, self.cfg.seed)
            reference_model, reference = self.transformer, lambda: reference_policy(self.transformer)
        else:
            reference_model, reference = copy.deepcopy(self.transformer).eval(), nullcontext
            self.transformer.requires_grad_(True)
        if cfg.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.params = [p for p in self.transformer.parameters() if p.requires_grad]
        optimizer = build_optimizer(cfg.optimizer, self.params, cfg.lr, cfg.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(self.transformer, optimizer)
        self.ema = EMA(self.transformer, cfg.ema_decay) if cfg.ema_decay > 0 else None
        schedule = self.objective.old_policy
        self.old = OldPolicy(self.params, schedule.schedule) if schedule else None
        self.policy = Policy(self.model, reference_model, reference, cfg.guidance_scale, cfg.noise_level,
                             old=self.old.applied if self.old else None)

    @property
    def _checkpoint_path(self) -> Path:
        return self.work_dir / f"state-rank{self.accelerator.process_index}.ckpt"

    def _state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "trainable": trainable_state(self.transformer),
            "pending": self.pending,
            "gradients": [None if p.grad is None else p.grad.clone() for p in self.params] if self.pending else None,
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer_steps": self.optimizer_steps,
            "old_policy": self.old.state() if self.old else None,
            "rng": checkpoint.rng_state(self.generator),
            "prompts": self.prompts.state_dict(),
            "history": self.history,
            "config": self.cfg.model_dump(mode="json"),
            "base_weights": self.base_weights,
            "seconds": self.seconds(),
        }

    def _resume(self) -> None:
        state = checkpoint.load(self._checkpoint_path)
        if state is None:
            return
        # the config names the base model, not its weights: an embedded base rebuilt at the same
        # path is another starting point, and a LoRA trained on the old one must not join it
        differences = config_differences(
            trajectory_config(state["config"]) | {"base weights": state.get("base_weights", "<unrecorded>")},
            trajectory_config(self.cfg.model_dump(mode="json")) | {"base weights": self.base_weights},
        )
        if differences:
            raise ResumeMismatch(
                f"checkpoint {self._checkpoint_path} (iteration {state['iteration']}) was written with another "
                "training config or base model:\n  " + "\n  ".join(differences) + "\nRestore those values to "
                f"resume, or delete {self.work_dir} to start this run from iteration 0."
            )
        load_trainable_state(self.transformer, state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.optimizer_steps = state.get("optimizer_steps", 0)
        if self.old:
            self.old.load(state["old_policy"])
        checkpoint.restore_rng_state(state["rng"], self.generator)
        self.prompts.load_state_dict(state["prompts"])
        self.iteration, self.history = state["iteration"], state["history"]
        self.seconds_before = state.get("seconds", 0.0)
        self.pending = state["pending"]
        for parameter, gradient in zip(self.params, state["gradients"] or []):
            parameter.grad = gradient
        checkpoint.log_resume(self._checkpoint_path, self.iteration, "iteration")

    def seconds(self) -> float:
        """Wall seconds this training has spent in trainers, earlier (interrupted) runs included."""
        return self.seconds_before + time.perf_counter() - self._session_start

    def save_checkpoint(self) -> None:
        checkpoint.atomic_save(self._state(), self._checkpoint_path)

    @property
    def method(self) -> str:
        """What trains, for progress output: 'fdfo'; the allocation of the policy-gradient
        objective; 'nft'/'dgpo', with the allocation when there is one."""
        algorithm, allocation = self.train_cfg.algorithm, self.train_cfg.allocation
        if algorithm == "grpo":
            return allocation
        return algorithm if algorithm == "fdfo" or allocation == "none" else f"{algorithm}-{allocation}"

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> list[dict[str, float]]:
        """Run the remaining iterations; returns the per-iteration metrics history."""
        bar = tqdm(
            range(self.iteration, self.train_cfg.iterations), desc=f"train {self.method}",
            initial=self.iteration, total=self.train_cfg.iterations, disable=not self.progress,
        )
        for _ in bar:
            metrics = self.step()
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", kl=f"{metrics.get('kl', 0):.2e}")
        return self.history

    def step(self) -> dict[str, float]:
        """One iteration: sample → score → advantages → update → log."""
        start = time.perf_counter()
        rollouts = self.sample(self.prompts.next(self.train_cfg.prompts_per_iteration))
        rewards = self.score(rollouts)
        targets = self.objective.prepare(rollouts, rewards, self.generator)
        update_stats = self.update(rollouts, targets)
        if self.old and self.objective.old_policy.update == "iteration":
            self.old.advance(self.optimizer_steps)
        self.iteration += 1
        metrics = self._summarise(rewards, targets, update_stats, time.perf_counter() - start)
        metrics |= self._localisation(rollouts, targets)
        self.history.append(metrics)
        if self.iteration % self.train_cfg.checkpoint_every == 0 or self.iteration == self.train_cfg.iterations:
            self.save_checkpoint()  # before logging: a failing logger loses no progress
        self._log(metrics, rollouts, rewards)
        return metrics

    def sample(self, records: list[Record]) -> Rollouts:
        """G rollouts per record, grouped consecutively (method §1–§3)."""
        cfg, group = self.train_cfg, self.train_cfg.group_size
        prompts = [r["prompt"] for r in records for _ in range(group)]
        expanded = [r for r in records for _ in range(group)]
        group_ids = torch.arange(len(records)).repeat_interleave(group)
        cond = condition(self.pipe, prompts, cfg.guidance_scale, self.device)
        share = {"none": None, "group": group, "pair": 2}[self.objective.noise_share]
        noise = initial_latents(latent_shape(self.pipe), group_ids, self.generator, share).to(self.device)
        core_mask = (core_token_mask(text_segments(self.pipe, cfg.core_segments), prompts, expanded).to(self.device)
                     if self.capture else None)
        deterministic = self.objective.rollout == "ode"
        sde_steps = None if deterministic else self._sde_window()
        self.transformer.eval()
        with self._sampling_weights():
            fields = sample_rollouts(
                self.transformer, self.pipe.vae, cond, noise, self.sigmas, cfg.noise_level, cfg.guidance_scale,
                self.generator, self.capture, core_mask, keep_velocities=self.objective.needs_velocities,
                sde_steps=sde_steps, deterministic=deterministic,
            )
        self._check_finite("sampled latents are", fields["latents"])
        trained = (self.objective.trained_steps(cfg.steps) if deterministic
                   else trained_steps(sde_steps, cfg.steps, cfg.train_fraction))
        return Rollouts(
            prompts, expanded, group_ids, cond, self.sigmas, core_mask=core_mask, sde_steps=sde_steps, trained=trained,
            **fields,
        )

    def score(self, rollouts: Rollouts) -> torch.Tensor:
        """(B,) rewards; where the trainer locates the core objects it also sets
        ``rollouts.core_coverage`` from the reward's own detections (method §3.4)."""
        if not self.locate:
            return self.reward.score(rollouts.images, rollouts.prompts, rollouts.records)
        rewards, boxes = score_and_locate(self.reward, rollouts.images, rollouts.prompts, rollouts.records)
        grid = rollouts.latents.shape[-1] // self.pipe.transformer.config.patch_size
        rollouts.core_coverage = token_coverage(boxes, rollouts.images.shape[-1], grid)
        return rewards

    def _sampling_weights(self) -> AbstractContextManager[object]:
        """The old (EMA) weights when the objective samples with them by now, else the trained ones."""
        schedule = self.objective.old_policy
        after = schedule.sample_after if schedule else None
        if self.old is None or after is None or (after > 0 and self.optimizer_steps <= after):
            return nullcontext()
        return self.old.applied()

    def _sde_window(self) -> list[int] | None:
        """This iteration's SDE steps: ``sde_window`` consecutive steps starting in the first
        half of the schedule (method §1), or None (every step) when the knob is 0."""
        window, steps = self.train_cfg.sde_window, self.train_cfg.steps
        if window == 0:
            return None
        start = int(torch.randint(max(1, steps // 2 - window + 1), (1,), generator=self.generator))
        return list(range(start, start + window))

    def update(self, rollouts: Rollouts, targets: Targets) -> dict[str, float]:
        """Inner epochs of minibatch updates over the trained steps (method §4).

        Groups without signal are dropped in a single process; with several processes they stay
        (with zero advantage) so that every rank takes the same number of optimizer steps. The
        optimizer steps after every ``accumulation_steps`` minibatches, and after the last
        minibatch of the final iteration.
        """
        cfg = self.train_cfg
        keep = targets.keep if self.accelerator.num_processes == 1 else torch.ones_like(targets.keep)
        index = keep.nonzero().flatten()
        # the steps step_loss trains: the objective's own draws (position k of its timesteps), else the rollouts'
        steps = list(range(targets.timesteps.shape[1])) if targets.timesteps is not None else rollouts.trained
        plan = []
        # split() of nothing yields one empty chunk
        for _ in range(cfg.inner_epochs if len(index) and steps else 0):
            plan += [(chunk, steps) for chunk in self._minibatches(index, rollouts.group_ids)]
        final = self.iteration + 1 == cfg.iterations
        totals: dict[str, list[float]] = {}
        self.transformer.train()
        for position, (chunk, steps) in enumerate(plan):
            flush = final and position == len(plan) - 1
            stats = self._minibatch(rollouts.select(chunk), targets.select(chunk), steps, flush)
            for key, value in stats.items():
                totals.setdefault(key, []).append(value)
        if final and not plan and self.pending:  # only in one process: every rank has the same plan
            totals["grad_norm"] = [self._optimizer_step()]
        self.transformer.eval()
        return {key: sum(values) / len(values) for key, values in totals.items()}

    def _minibatches(self, index: torch.Tensor, group_ids: torch.Tensor) -> list[torch.Tensor]:
        """``index`` in random order, split into minibatches of ``minibatch_size`` rollouts; with an
        objective that needs ``whole_groups``, of whole prompt groups (at least one per minibatch)."""
        if not self.objective.whole_groups:
            order = index[torch.randperm(len(index), generator=self.generator)]
            return list(order.split(self.train_cfg.minibatch_size))
        groups = group_ids[index].unique()
        per_batch = max(1, self.train_cfg.minibatch_size // self.train_cfg.group_size)
        shuffled = groups[torch.randperm(len(groups), generator=self.generator)]
        return [index[torch.isin(group_ids[index], chunk)] for chunk in shuffled.split(per_batch)]

    def _minibatch(
        self, rollouts: Rollouts, targets: Targets, steps: list[int], flush: bool = False
    ) -> dict[str, float]:
        """Accumulate the gradient over ``steps``; after ``accumulation_steps`` minibatches (or
        on ``flush``) all-reduce it, then one optimizer step and one EMA update."""
        self.pending += 1
        apply = flush or self.pending == self.train_cfg.accumulation_steps
        sums: dict[str, float] = {}
        for position, t in enumerate(steps):
            sync = apply and position == len(steps) - 1
            with (nullcontext() if sync else self.accelerator.no_sync(self.model)), self.accelerator.autocast():
                loss, stats = self.objective.step_loss(self.policy, rollouts, targets, t)
                self._check_finite(f"loss of denoising step {t} is", loss)
                self.accelerator.backward(loss / (len(steps) * self.train_cfg.accumulation_steps))
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value) / len(steps)
            sums["loss"] = sums.get("loss", 0.0) + loss.item() / len(steps)
        if apply:
            sums["grad_norm"] = self._optimizer_step()
        return sums

    def _optimizer_step(self) -> float:
        """Clip, step and clear the accumulated gradient, update the EMA; returns the gradient norm."""
        grad_norm = float(self.accelerator.clip_grad_norm_(self.params, self.train_cfg.grad_clip))
        self._check_finite("gradient norm is", torch.tensor(grad_norm))  # before the step: weights stay finite
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pending = 0
        if self.old and self.objective.old_policy.update == "optimizer_step":
            self.old.advance(self.optimizer_steps)  # read at the count before this step, as DGPO
        self.optimizer_steps += 1
        if self.ema:
            self.ema.step()
        return grad_norm

    def _check_finite(self, what: str, values: torch.Tensor) -> None:
        """Stop with ``TrainingDiverged`` naming the iteration when ``values`` hold NaN or inf;
        ``what`` names them with their verb ("gradient norm is")."""
        if not bool(torch.isfinite(values.detach()).all()):
            self.optimizer.zero_grad(set_to_none=True)
            kept = (f"its last checkpoint ({self._checkpoint_path}) is kept" if self._checkpoint_path.exists()
                    else "no checkpoint was written yet")
            raise TrainingDiverged(
                f"training diverged at iteration {self.iteration}: the {what} not finite (NaN or inf); "
                f"{kept}. Try a smaller train.lr"
            )

    # -- logging and output -----------------------------------------------------------------
    def _summarise(self, rewards: torch.Tensor, targets: Targets, stats: dict[str, float],
                   seconds: float) -> dict[str, float]:
        all_rewards = self.accelerator.gather(rewards.to(self.device)).float()
        adv = targets.advantages.float()
        return {
            "iteration": float(self.iteration),
            "reward_mean": all_rewards.mean().item(),
            "reward_std": all_rewards.std(unbiased=False).item(),
            "advantage_mean": adv.mean().item(),
            "advantage_std": adv.std(unbiased=False).item(),
            "advantage_abs_max": adv.abs().max().item(),
            "kept_fraction": targets.keep.float().mean().item(),
            "seconds": seconds,
            **stats,
        }

    def _localisation(self, rollouts: Rollouts, targets: Targets) -> dict[str, float]:
        """Per trained step, the mean localisation of the allocation weights on the core objects
        (method §3.4; 1 = none), when both are known."""
        if (targets.weights is None or rollouts.core_coverage is None
                or self.train_cfg.allocation in ("none", "uniform_region")):
            return {}
        scores = mean_localisation(targets.weights, rollouts.core_coverage)
        return {f"localisation_t{t}": float(scores[t]) for t in rollouts.trained if not torch.isnan(scores[t])}

    def _log(self, metrics: dict[str, float], rollouts: Rollouts, rewards: torch.Tensor) -> None:
        if not self.accelerator.is_main_process:
            return
        if self.on_metrics:
            self.on_metrics(metrics, self.iteration)
        completed = self.iteration - 1  # iterations of updates behind the weights that drew these rollouts
        last = self.iteration == self.train_cfg.iterations
        if self.on_artifact and (completed % self.train_cfg.log_images_every == 0 or last):
            for path in self.figures(rollouts, rewards):
                self.on_artifact(path, completed)

    def figures(self, rollouts: Rollouts, rewards: torch.Tensor) -> list[Path]:
        """A sample grid (one rollout per group) and, with capture, the allocation overlays."""
        out = self.work_dir / "figures"
        firsts = torch.arange(0, len(rollouts), self.train_cfg.group_size)
        captions = [f"{rollouts.prompts[i]} ({rewards[i]:.2f})" for i in firsts.tolist()]
        paths = [sample_grid(rollouts.images[firsts], captions, out / f"samples_{self.iteration:04d}.png",
                             title=f"iteration {self.iteration}")]
        if rollouts.attention is not None:
            shown = torch.Generator().manual_seed(self.iteration)  # figures leave the training stream alone
            targets = self.objective.prepare(rollouts.select(firsts), rewards[firsts], shown)
            steps = sorted({0, self.train_cfg.steps // 2, self.train_cfg.steps - 1})
            paths.append(allocation_overlay(
                rollouts.images[firsts], targets.weights, steps, [rollouts.prompts[i] for i in firsts.tolist()],
                out / f"allocation_{self.iteration:04d}.png",
            ))
        return paths

    def final_weights(self) -> None:
        """Leave the EMA weights (what evaluation uses) in the transformer."""
        if self.ema:
            self.ema.copy_to()
