"""STAR: SpatioTemporal Adaptive Reward allocation for RL post-training of flow models.

Nothing in this package imports Prefect, DVC or MLflow: orchestration and tracking live in
``pipelines/``.
"""
