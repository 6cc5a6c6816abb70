"""``python -m pipelines <stage> ...``: every stage's command line (pipelines/cli.py)."""

from pipelines.cli import main

main()
