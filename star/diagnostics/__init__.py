"""Diagnostics: gradient signal-to-noise, map localisation, what the base model has learnt."""
