"""The command line every stage shares: ``python -m pipelines.<stage> [--params FILE] [-S key=value ...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import yaml

from star.config import ConfigError


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
