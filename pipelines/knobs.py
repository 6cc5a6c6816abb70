"""Every knob of params.yaml with its type, default and description:

    python -m pipelines.knobs                       # a markdown table
    python -m pipelines.knobs --write params.yaml   # the params file: every knob at its default, described

star/config.py holds the defaults; params.yaml is written from it (tests/test_config.py checks
that the committed one is what ``--write`` writes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from star.config import Config, describe_knobs, write_params


def knob_table() -> str:
    """Every knob as a row of a markdown table: key, type, default, description."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, type_name, default, description in describe_knobs():
        type_name = type_name.replace("|", "\\|")
        lines.append(f"| `{key}` | {type_name} | `{default}` | {description} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the knob table, or with ``--write FILE`` write the defaults as a params file."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.knobs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, metavar="FILE",
                        help="write every knob at its default, with its description as a comment, to FILE")
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote {write_params(Config(), args.write)}")
    else:
        print(knob_table())


if __name__ == "__main__":
    main()
