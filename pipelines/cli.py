"""The command line every stage shares: ``python -m pipelines.<stage> [--params FILE] [-S key=value ...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch
import yaml

from star.config import Config, ConfigError, load_config


def use_threads(cfg: Config) -> None:
    """Apply ``threads`` (0 keeps torch's default) to this process."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def stage_config(params: str, overrides: dict[str, Any] | None) -> Config:
    """The stage's config from ``params`` and ``-S`` overrides, applied to this process."""
    cfg = load_config(params, overrides)
    use_threads(cfg)
    return cfg


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["base.steps=10", "seed=1"]`` -> ``{"base": {"steps": 10}, "seed": 1}`` (YAML values)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not of the form key.path=value")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return overrides


def run_stage(flow: Callable[..., Any], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one knob, e.g. -S base.steps=10 (repeatable)")
    args = parser.parse_args()
    try:
        flow(params=args.params, overrides=parse_overrides(args.set))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
