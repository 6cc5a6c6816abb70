"""Prompt sets: the public file formats, each task's train/test prompts, GenEval's templates."""
