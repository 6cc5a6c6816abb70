"""The STAR method: core content, attention capture, allocation maps and where the core objects are."""
