"""Sampling: noise, sigma schedules, CFG, the ODE sampler, the SDE policy step and batched rollouts."""
