"""RL post-training: advantages, objectives, optimizers, the trainer, its prompt source, checkpoints and EMA."""
