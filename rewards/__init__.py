"""Rewards behind one interface: ``score(images, prompts, metadata) -> tensor``."""
