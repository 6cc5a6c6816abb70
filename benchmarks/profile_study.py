"""Where the study's time goes: each phase's share of a training iteration, of a checkpoint's
evaluation, and the fixed cost of starting a stage (imports, Prefect's temporary server),
measured in one run on the default config and the trained base.

    python benchmarks/profile_study.py [--iterations 3] [--params params.yaml] [--skip-startup]

Training: the trainer's own methods are timed in place (sample = SDE rollouts with attention
capture and VAE decoding, score = reward and detection, advantages = the objective's
preparation including allocation maps, update = the inner-epoch minibatch steps, checkpoint,
log). Evaluation: ODE sampling vs scoring of one GenEval pass over the test prompts, per
noise. Start-up: a fresh process importing a stage module (with and without the interpreter's
teardown), and one running an empty Prefect flow (its temporary server), each timed end to
end. Prints a table of seconds and shares per part, and the VAE decoding's precisions side by
side.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.evaluate import evaluation_reward, test_records  # noqa: E402
from pipelines.shared_server import prefect_server  # noqa: E402
from star.config import load_config  # noqa: E402
from star.evaluation.evaluate import sample_records  # noqa: E402
from star.models.sd3 import configure_decoding, images_from_latents, pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts  # noqa: E402
from star.rl.trainer import Trainer  # noqa: E402
from star.sampling.sampler import latent_shape  # noqa: E402
from star.scoring import build_reward  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def timed(seconds: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start
    return wrapper


def table(title: str, seconds: dict[str, float], total: float) -> None:
    print(f"\n{title}: {total:.1f} s\n\n| phase | seconds | share |\n|---|---:|---:|")
    for name, value in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"| {name} | {value:.2f} | {value / total:.0%} |")
    rest = total - sum(seconds.values())
    print(f"| (rest: bookkeeping) | {rest:.2f} | {rest / total:.0%} |")


def profile_training(params: str, iterations: int) -> None:
    cfg = load_config(params)
    cfg = cfg.for_variant("star" if "star" in cfg.study.variants else next(iter(cfg.study.variants)))
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    seconds: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(cfg, pipe, reward, records, Path(work), progress=False)
        for name in ("sample", "score", "update", "save_checkpoint", "_log", "_localisation"):
            setattr(trainer, name, timed(seconds, name.strip("_"), getattr(trainer, name)))
        trainer.objective.prepare = timed(seconds, "advantages (+ maps)", trainer.objective.prepare)
        trainer.step()  # warm-up: first-call allocations and lazy loads are not the steady state
        seconds.clear()
        start = time.perf_counter()
        for _ in range(iterations):
            trainer.step()
        total = time.perf_counter() - start
    rollouts = cfg.train.prompts_per_iteration * cfg.train.group_size
    table(f"Training iteration of `{cfg.train.allocation}` ({rollouts} rollouts, {cfg.train.steps} steps), "
          f"mean of {iterations}", {k: v / iterations for k, v in seconds.items()}, total / iterations)


def profile_evaluation(params: str) -> None:
    cfg = load_config(params)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    reward = evaluation_reward(cfg, "geneval")
    records = test_records(cfg, "geneval")
    one_noise = cfg.eval.model_copy(update={"noises": 1})
    seconds: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    images = timed(seconds, "sampling (ODE, CFG)", sample_records)(pipe, records, one_noise, False)
    timed(seconds, "scoring (detector + rules)", reward.evaluate)(images, records)
    total = time.perf_counter() - start
    table(f"GenEval evaluation, {len(records)} prompts x 1 noise ({cfg.eval.steps} steps; the study runs "
          f"{cfg.eval.noises} noises)", seconds, total)


def profile_decoding(params: str, repeats: int = 3) -> None:
    """``model.decode_dtype``: the VAE decoding of one iteration's final latents, side by side."""
    cfg = load_config(params)
    rollouts = cfg.train.prompts_per_iteration * cfg.train.group_size
    pipe = pipeline_for(cfg.model.model_copy(update={"decode_dtype": "float32"}), cfg.paths.base_model)
    latents = torch.randn((rollouts, *latent_shape(pipe)), generator=torch.Generator().manual_seed(0))
    plain = copy.deepcopy(pipe.vae).to(memory_format=torch.contiguous_format)
    fast = copy.deepcopy(pipe.vae)
    configure_decoding(fast, "bfloat16")

    def before() -> torch.Tensor:  # the decoding before the knob: contiguous fp32
        raw = latents / plain.config.scaling_factor + plain.config.shift_factor
        return (plain.decode(raw).sample.float() / 2 + 0.5).clamp(0, 1)

    variants = {"float32, contiguous (before)": before,
                "float32, channels-last (default)": lambda: images_from_latents(pipe.vae, latents),
                "bfloat16 autocast, channels-last (`decode_dtype: bfloat16`)":
                    lambda: images_from_latents(fast, latents)}
    # bf16 autocast pays off only where the CPU has bf16 units (AVX512-BF16, AMX); on AVX2 it is emulated.
    print(f"\nVAE decoding of {rollouts} final latents (median of {repeats}), side by side, on a CPU with "
          f"{torch.backends.cpu.get_cpu_capability()}:\n\n"
          "| decoding | seconds | speed-up | max / mean pixel difference |\n|---|---:|---:|---|")
    reference, first = None, 0.0
    with torch.no_grad():
        for name, decode in variants.items():
            decode()  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                images = decode()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            if reference is None:
                reference, first = images, seconds
            difference = (images - reference).abs()
            print(f"| {name} | {seconds:.3f} | {first / seconds:.2f}x | "
                  f"{difference.max():.4f} / {difference.mean():.5f} |")


def profile_startup(repeats: int = 3) -> None:
    def run(code: str, env: dict[str, str] | None = None) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, env=env)
        return time.perf_counter() - start

    def median(code: str, env: dict[str, str] | None = None) -> float:
        return statistics.median(run(code, env) for _ in range(repeats))

    empty_flow = "import pipelines\nfrom prefect import flow\nflow(lambda: 1)()"
    python = median("pass")
    imports = median("import pipelines.train")
    frozen = median("import gc, pipelines.train\ngc.freeze()")  # what pipelines/cli.py does before exiting
    temporary = median(empty_flow)
    server_start = time.perf_counter()
    with prefect_server() as api_url:
        server_seconds = time.perf_counter() - server_start
        shared = median(empty_flow, os.environ | {"PREFECT_API_URL": api_url})
    table(f"Stage start-up, each in a fresh process (median of {repeats})", {
        "python": python, "importing a stage (torch, diffusers, Prefect, MLflow)": imports - python,
        "an empty Prefect flow (imports + temporary server)": temporary - python,
    }, imports + temporary - python)
    print(f"an empty flow with its temporary server {temporary:.1f} s, against one shared server "
          f"{shared:.1f} s (started once in {server_seconds:.1f} s): {temporary / shared:.2f}x per stage "
          "(`python -m pipelines.shared_server -- dvc repro`, what scripts/repro.sh runs)")
    print(f"a stage's imports with the interpreter's teardown {imports:.1f} s, with gc.freeze() before exit "
          f"{frozen:.1f} s: {imports / frozen:.2f}x (pipelines/cli.py freezes)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--iterations", type=int, default=3, help="timed training iterations (after one warm-up)")
    parser.add_argument("--skip-startup", action="store_true", help="do not time the process start-up")
    args = parser.parse_args(argv)
    profile_training(args.params, args.iterations)
    profile_decoding(args.params)
    profile_evaluation(args.params)
    if not args.skip_startup:
        profile_startup()


if __name__ == "__main__":
    main()
