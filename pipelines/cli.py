"""The command line of every stage:

    python -m pipelines <stage> [--params FILE] [-S key=value ...] [--debug]
    python -m pipelines train --variant star [--seed 0]
    python -m pipelines evaluate --checkpoint star-s0
    python -m pipelines train --study tasks --variant ocr-star   (a study of params.yaml's `studies`)

(``python -m pipelines.<stage>`` runs the same code.) The configuration, the params file and
the ``-S`` overrides in Hydra's override grammar (the one ``dvc exp run -S`` speaks: ``key=value``,
``+key=value``, ``++key=value``, ``~key``) is validated before Prefect, MLflow or any model is
imported: a bad value fails within a second or two naming the key, the value and its source.
This module imports nothing heavy at load time for that reason.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from typing import Any

from star.config import DEFAULT_STUDY, DELETE, Config, ConfigError, load_config

STAGES: dict[str, str] = {
    "prepare": "write the train/test prompt sets of every task to paths.prompts",
    "base": "pretrain the embedded miniature SD3 (or record the pretrained model used)",
    "reward_models": "train the embedded reward models (world-CLIP)",
    "train": "RL post-training of one variant and seed",
    "evaluate": "score one checkpoint on every evaluation task",
    "report": "the study report: tables with intervals, figures, HTML",
}

STUDY_STAGES: tuple[str, ...] = ("train", "evaluate", "report")
"""The stages that take ``--study`` (a key of the config's ``studies``)."""


def use_threads(cfg: Config) -> None:
    """Apply ``threads`` (0 keeps torch's default) to this process."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)


def stage_config(params: str, overrides: dict[str, Any] | None) -> Config:
    """The stage's config from ``params`` and ``-S`` overrides, applied to this process."""
    cfg = load_config(params, overrides)
    use_threads(cfg)
    return cfg


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["base.steps=10", "+seed=1", "~train.lr"]`` -> ``{"base": {"steps": 10}, "seed": 1,
    "train": {"lr": DELETE}}``, parsed by Hydra's override parser (values typed as Hydra types
    them: ``[1,2]`` a list, ``null`` None, ``'1'`` a string). ``+``/``++`` set the key like a
    plain override (every knob exists, with its default); ``~key`` drops it from the params file."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides: dict[str, Any] = {}
    parser = OverridesParser.create()
    for pair in pairs:
        try:
            (parsed,) = parser.parse_overrides([pair])
        except HydraException as error:
            raise ConfigError(f"-S {pair!r} is not an override of the form key.path=value: {error}") from None
        if parsed.package is not None:
            raise ConfigError(f"-S {pair!r}: config packages (@) do not apply to params.yaml")
        value = DELETE if parsed.is_delete() else parsed.value()
        node = overrides
        *parents, leaf = parsed.key_or_group.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, help_text in STAGES.items():
        sub = stages.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
        sub.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one knob in Hydra's grammar, e.g. -S base.steps=10 (repeatable)")
        sub.add_argument("--debug", action="store_true", help="print tracebacks (also STAR_DEBUG=1)")
        if name in STUDY_STAGES:
            sub.add_argument("--study", default=DEFAULT_STUDY,
                             help=f"a key of the params' studies (default: {DEFAULT_STUDY}; tasks: the task study)")
        if name == "train":
            sub.add_argument("--variant", required=True,
                             help="a variant of the study (studies.<study>.variants: e.g. star, none; "
                                  "ocr-star with --study tasks)")
            sub.add_argument("--seed", type=int, default=None, help="training seed (default: the params' seed)")
        if name == "evaluate":
            sub.add_argument("--checkpoint", required=True, help="'base' or a trained variant, e.g. star-s0")
    return parser


def preflight(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    """Everything that can be checked without Prefect or a model: the config (with the
    variant), and that the inputs the stage reads exist. Raises ConfigError."""
    overrides = parse_overrides(args.set)
    cfg = load_config(args.params, overrides).for_study(getattr(args, "study", DEFAULT_STUDY))
    if args.stage == "train":
        cfg = cfg.for_variant(args.variant, args.seed)
    if args.stage == "evaluate" and args.checkpoint != "base":  # what the user named, first
        path = cfg.paths.checkpoints / args.checkpoint
        if not path.is_dir():
            variant, _, seed = args.checkpoint.rpartition("-s")
            raise ConfigError(f"checkpoint {args.checkpoint!r} not found at {path}: train it first "
                              f"(`python -m pipelines train --study {args.study} --variant {variant} --seed {seed}`)")
    if args.stage in ("train", "evaluate"):
        check_model_source(cfg)
        check_reward_models(cfg, args.stage)
    if args.stage == "prepare":
        check_prompt_files(cfg)
    return cfg, overrides


def check_prompt_files(cfg: Config) -> None:
    """Every prompt file of ``prompt_sets`` exists and parses (a bad line named by file and
    number), before Prefect starts: only ``prepare`` reads them."""
    from star.data.task_prompts import validate_prompt_files

    try:
        validate_prompt_files(cfg.prompt_sets)
    except (ValueError, OSError) as error:  # PromptSetError, PromptSetConfigError, an unreadable file
        raise ConfigError(str(error)) from None


def check_model_source(cfg: Config) -> None:
    """The model a stage loads exists: the embedded base (built by the ``base`` stage), or a
    local ``model.pretrained`` directory (anything that is not a hub id ``owner/name``)."""
    from star.models.source import missing_model

    problem = missing_model(cfg.model, cfg.paths.base_model)
    if problem:
        raise ConfigError(problem)


def check_reward_models(cfg: Config, stage: str) -> None:
    """The embedded PickScore stand-in exists when the stage scores with it."""
    used = set(cfg.rewards.weights or [cfg.rewards.task]) if stage == "train" else set(cfg.study.eval_tasks)
    world_clip = cfg.paths.reward_models / "world_clip"
    if "pickscore" in used and cfg.rewards.pickscore_source == "embedded" and not world_clip.is_dir():
        raise ConfigError(f"the embedded PickScore stand-in is not at {world_clip} (paths.reward_models): build it "
                          f"with `dvc repro reward_models` or fetch it with `dvc pull {cfg.paths.reward_models}`")


def named_flow(stage_flow: Any, args: argparse.Namespace) -> Any:
    """The stage's flow with a readable Prefect run name: ``evaluate-star-s0``, ``base``, ``report``."""
    from pipelines.tracking import run_name  # the MLflow run's name; MLflow is imported with the stage

    tags = {"checkpoint": args.checkpoint} if args.stage == "evaluate" else {}
    return stage_flow.with_options(flow_run_name=run_name(args.stage, tags))


def flow_tags(args: argparse.Namespace, cfg: Config | None = None) -> list[str]:
    """The stage's Prefect flow-run tags, to filter the UI as the MLflow runs are: ``stage:train``,
    ``study:default``, ``variant:star``, ``seed:0``, ``checkpoint:star-s0`` (those the stage has)
    and, for a training, ``task:geneval``: the training task of ``cfg``, the variant's config."""
    tags = [f"stage:{args.stage}"]
    for key in ("study", "variant", "seed", "checkpoint"):
        value = getattr(args, key, None)
        if value is not None:
            tags.append(f"{key}:{value}")
    if cfg is not None and args.stage == "train":
        tags.append(f"task:{cfg.rewards.task}")
    return tags


def run(args: argparse.Namespace) -> int:
    """Validate, then import the stage (Prefect, MLflow, torch) and run its flow; the exit code."""
    from pipelines import failures

    if args.debug:
        os.environ[failures.DEBUG_ENV] = "1"
    try:
        cfg, overrides = preflight(args)  # the flow loads the same config again, in its own run
    except ConfigError as error:
        return failures.report_failure(error)
    failures.interrupt_on_signals()
    failures.mark_stage_process()
    failures.reap_orphaned_servers()
    failures.quiet_library_warnings()
    failures.failures_last()  # registered before Prefect's exit handlers, so it runs after them
    try:
        module = importlib.import_module(f"pipelines.{args.stage}")
        failures.quiet_prefect_tracebacks()
        extra = {"variant": args.variant, "seed": args.seed} if args.stage == "train" else {}
        extra |= {"checkpoint": args.checkpoint} if args.stage == "evaluate" else {}
        extra |= {"study": args.study} if args.stage in STUDY_STAGES else {}
        entry = getattr(module, "run_cli", None) or named_flow(getattr(module, args.stage), args)
        from prefect import tags  # imported with the stage's module

        with tags(*flow_tags(args, cfg)):
            entry(params=args.params, overrides=overrides, **extra)
    except BaseException as error:  # noqa: BLE001  (signals included: one message, an exit code)
        if isinstance(error, SystemExit):
            raise
        return failures.report_failure(error)
    return 0


def main(argv: list[str] | None = None) -> None:
    status = run(build_parser().parse_args(argv))
    # The interpreter's teardown collects torch's, diffusers' and MLflow's objects one by one:
    # ~2 s of every stage process (benchmarks/profile_study.py). Frozen objects are left to the
    # OS; atexit handlers and thread joins (MLflow, Prefect) still run as usual.
    gc.freeze()
    sys.exit(status)


def stage_main(stage: str) -> None:
    """``python -m pipelines.<stage> ...``: the same as ``python -m pipelines <stage> ...``."""
    main([stage, *sys.argv[1:]])


if __name__ == "__main__":
    main()

