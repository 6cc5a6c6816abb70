"""Does a token-grounding loss make the base's attention find the objects? A measurement before a
base is rebuilt with it (star/world/grounding.py, docs/method.md §0 Grounding).

From the base at ``paths.base_model``, runs the base's grounding phase (``ground_base``:
``--steps`` steps on freshly rendered full-size world images) once per grounding weight (0 is
the control: the same steps without the loss), and measures, on the held-out GenEval prompts,
the localisation of STAR's maps (the raw core-token attention A and the default map m, method
§3.4) per GenEval task, and the
samples' GenEval score under the training sampler. Prints a markdown table; nothing is saved.

    python scripts/diagnose_grounding.py [--weights 0 0.1 1] [--steps 400] [--lr 3e-4]
        [--images 4000] [--per-prompt 1] [--save DIR] [-S key=value]

``--weights`` with no value measures the base alone.

``--save DIR`` keeps the last fine-tuned pipeline there (a base directory: evaluate it with
``python -m pipelines evaluate --checkpoint base -S paths.base_model=DIR ...``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipelines.cli import parse_overrides, use_threads  # noqa: E402
from star.config import Config, load_config  # noqa: E402
from star.diagnostics.maps import capture_maps  # noqa: E402
from star.files import atomic_directory  # noqa: E402
from star.method.allocation import AllocationParams, allocation_maps  # noqa: E402
from star.method.regions import localisation  # noqa: E402
from star.models.sd3 import pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts  # noqa: E402
from star.scoring import build_reward  # noqa: E402
from star.world.pretrain import ground_base  # noqa: E402


def fine_tune(cfg: Config, weight: float, steps: int, lr: float, images: int) -> tuple[object, list[dict[str, float]]]:
    """The base at ``paths.base_model`` after a grounding phase (``ground_base``) of ``steps``
    steps at ``weight`` (0: the same steps without the loss), and the metrics the steps logged."""
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    phase = cfg.base.model_copy(update={"grounding_weight": weight, "grounding_steps": steps, "grounding_lr": lr,
                                        "grounding_images": images})
    log: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as work:
        ground_base(pipe, cfg.model_copy(update={"base": phase}), Path(work) / "grounding.ckpt",
                    on_metrics=lambda _, metrics, step: log.append(metrics))
    return pipe, log


def measure(pipe: object, cfg: Config, per_prompt: int, seed: int) -> dict[str, tuple[float, float]]:
    """Per GenEval task and overall: (localisation of A, localisation of m) on the held-out
    prompts, and the training reward of their samples under the training sampler."""
    records = [r for r in load_task_prompts(cfg.paths.prompts, "geneval", "test") for _ in range(per_prompt)]
    reward = build_reward(cfg.rewards.for_task("geneval"), cfg.paths.reward_models)
    maps = capture_maps(pipe, records, cfg.train, seed, reward)
    found = maps.coverage.sum(-1) > 0
    raw = localisation(allocation_maps(maps.attention, AllocationParams(1.0, 1.0, 0.0, 1e9)), maps.coverage)
    train = cfg.train
    star = localisation(allocation_maps(maps.attention, AllocationParams(train.gamma, train.mix, train.w_min,
                                                                         train.w_max)), maps.coverage)
    scores = reward.score(maps.images, [r["prompt"] for r in records], records)
    tags = [r["tag"] for r in records]
    rows = {}
    for tag in [*dict.fromkeys(tags), "all"]:
        pick = torch.tensor([(t == tag or tag == "all") for t in tags]) & found
        rows[tag] = (raw[pick].nanmean().item(), star[pick].nanmean().item(),
                     scores[torch.tensor([(t == tag or tag == "all") for t in tags])].float().mean().item())
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.1, 1.0],
                        help="grounding weights of the fine-tunes (none: measure the base alone)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--images", type=int, default=4000, help="full-size world images rendered for the fine-tune")
    parser.add_argument("--per-prompt", type=int, default=1, help="rollouts per held-out prompt")
    parser.add_argument("--seed", type=int, default=7, help="seed of the measured samples")
    parser.add_argument("--save", type=Path, default=None, help="folder for the last fine-tuned pipeline")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, parse_overrides(args.set))
    use_threads(cfg)
    results = {"base": measure(pipeline_for(cfg.model, cfg.paths.base_model), cfg, args.per_prompt, args.seed)}
    for weight in args.weights:
        start = time.perf_counter()
        pipe, log = fine_tune(cfg, weight, args.steps, args.lr, args.images)
        last = log[-1] if log else {}
        print(f"weight {weight:g}: {time.perf_counter() - start:.0f} s, last logged {last}", flush=True)
        results[f"weight {weight:g}"] = measure(pipe, cfg, args.per_prompt, args.seed)
        if args.save is not None:
            atomic_directory(args.save, pipe.save_pretrained)
    tags = list(results["base"])
    print("\n| model | " + " | ".join(f"{t}: A / m / reward" for t in tags) + " |")
    print("|---|" + "---|" * len(tags))
    for name, rows in results.items():
        print(f"| {name} | " + " | ".join(f"{a:.2f} / {m:.2f} / {s:.2f}" for a, m, s in rows.values()) + " |")


if __name__ == "__main__":
    main()
