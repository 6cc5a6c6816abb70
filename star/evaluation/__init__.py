"""Checkpoint evaluation and the study report: scores, intervals, tables and figures."""
