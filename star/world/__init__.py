"""The shapes world: the embedded default's procedural images, prompts and detector."""
