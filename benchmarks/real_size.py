"""What one STAR iteration costs at Stable Diffusion 3.5 Medium's size (docs/method.md §7).

    python benchmarks/real_size.py                 # CUDA: the real size; CPU: a labelled reduced size
    python benchmarks/real_size.py --layers 24 --resolution 512 --steps 10   # force the real size

Builds SD3.5-M's transformer from its published config (tests/tiny_models.SD35_MEDIUM_TRANSFORMER:
24 MMDiT-X blocks, dual attention in the first 13, width 1536) and SD3's VAE config, with random
weights, in bf16 on CUDA (fp32 on CPU, where bf16 matmuls are emulated), and times, side by side
in one run, through the project's own code:

- one rollout batch (``--prompts`` × ``--group`` images, ``--steps`` SDE steps, CFG, VAE decode)
  without and with STAR's attention capture (the capture overhead ratio);
- one training minibatch of ``star`` with LoRA on Flow-GRPO's targets (the trained steps of
  ``--minibatch`` rollouts: forward with CFG, clipped loss, backward), with gradient
  checkpointing off and on.

Text conditioning is random tensors of SD3's shapes (77 CLIP + 256 T5 tokens of width 4096,
pooled 2048): the text encoders run once per prompt and are not part of the loop. Prints wall
times (median of ``--repeats``), peak memory (CUDA: ``max_memory_allocated`` per phase; CPU: the
process's peak RSS so far) and the device. On CPU the defaults are reduced (2 blocks, 1 dual;
256 px; 4 steps; one prompt × 2) so that it finishes in a few minutes, and every row says so.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from star.config import load_config  # noqa: E402
from star.method.attention import AttentionCapture  # noqa: E402
from star.models.lora import add_lora, reference_policy  # noqa: E402
from star.rl.objectives import Policy  # noqa: E402
from star.rl.trainer import build_objective  # noqa: E402
from star.sampling.rollout import Rollouts, sample_rollouts, trained_steps  # noqa: E402
from star.sampling.sampler import Conditioning  # noqa: E402
from tests.tiny_models import SD35_MEDIUM_TRANSFORMER  # noqa: E402

SD3_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
               layers_per_block=2, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
               use_quant_conv=False, use_post_quant_conv=False)
"""SD3's VAE (``vae/config.json`` of SD3.5-M): 8x downsampling, 16 latent channels."""
TEXT_TOKENS, TEXT_WIDTH, POOLED = 77 + 256, 4096, 2048


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS (process peak)"


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, str]:
    """Median seconds of ``repeats`` calls after one warm-up, and the peak memory of the calls."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), peak_memory(device)


def build(args: argparse.Namespace, device: torch.device,
          dtype: torch.dtype) -> tuple[SD3Transformer2DModel, AutoencoderKL]:
    config = SD35_MEDIUM_TRANSFORMER | {"num_layers": args.layers,
                                        "dual_attention_layers": tuple(range(min(13, args.dual_layers)))}
    transformer = SD3Transformer2DModel(**config).to(device, dtype).eval().requires_grad_(False)
    vae = AutoencoderKL(**SD3_VAE).to(device, dtype).eval().requires_grad_(False)
    return transformer, vae


def conditioning(batch: int, device: torch.device, dtype: torch.dtype) -> Conditioning:
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    return Conditioning(randn(batch, TEXT_TOKENS, TEXT_WIDTH), randn(batch, POOLED),
                        randn(batch, TEXT_TOKENS, TEXT_WIDTH), randn(batch, POOLED))


def main(argv: list[str] | None = None) -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24 if cuda else 2, help="transformer blocks (SD3.5-M: 24)")
    parser.add_argument("--dual-layers", type=int, default=13 if cuda else 1,
                        help="dual-attention blocks (SD3.5-M: 13)")
    parser.add_argument("--resolution", type=int, default=512 if cuda else 256, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=10 if cuda else 4, help="SDE steps of a rollout")
    parser.add_argument("--prompts", type=int, default=2 if cuda else 1, help="prompts per rollout batch")
    parser.add_argument("--group", type=int, default=8 if cuda else 2, help="rollouts per prompt")
    parser.add_argument("--minibatch", type=int, default=4 if cuda else 2, help="rollouts per training minibatch")
    parser.add_argument("--repeats", type=int, default=3 if cuda else 1)
    parser.add_argument("--lora-rank", type=int, default=32, help="LoRA rank (Flow-GRPO's SD3.5 recipe: 32, alpha 64)")
    parser.add_argument("--params", default="params.yaml", help="train knobs (LoRA, clip, STAR) from here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    real = (args.layers, args.dual_layers, args.resolution, args.steps) == (24, 13, 512, 10)
    label = "real size" if real else "REDUCED (not SD3.5-M's cost)"
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"

    cfg = load_config(args.params, overrides={"train": {
        "allocation": "star", "steps": args.steps, "group_size": args.group, "lora_rank": args.lora_rank,
        "lora_alpha": 2 * args.lora_rank}})
    transformer, vae = build(args, device, dtype)
    batch, side = args.prompts * args.group, args.resolution // 8
    cond = conditioning(batch, device, dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(args.steps, device=device)
    sigmas = scheduler.sigmas.to(device=device, dtype=torch.float32)
    noise = torch.randn(batch, 16, side, side, device=device, dtype=dtype)
    core_mask = torch.zeros(batch, TEXT_TOKENS, device=device)
    core_mask[:, 4:7] = core_mask[:, 77 + 3 : 77 + 8] = 1.0  # a few core tokens in each segment
    capture = AttentionCapture(transformer, cfg.train.capture_blocks)

    def rollout(with_capture: bool) -> dict:
        generator = torch.Generator(device=device).manual_seed(0)
        return sample_rollouts(transformer, vae, cond, noise, sigmas, cfg.train.noise_level, cfg.train.guidance_scale,
                               generator, capture if with_capture else None, core_mask if with_capture else None)

    print(f"device: {name}; {label}: {args.layers} blocks ({args.dual_layers} dual), {args.resolution} px "
          f"({(side // 2) ** 2} image tokens + {TEXT_TOKENS} text), {args.steps} SDE steps, CFG, {dtype}\n")
    print("| measurement | seconds (median) | peak memory |\n|---|---:|---|")
    plain = timed(lambda: rollout(False), device, args.repeats)
    captured = timed(lambda: rollout(True), device, args.repeats)
    print(f"| rollout: {batch} images, no capture | {plain[0]:.2f} | {plain[1]} |")
    print(f"| rollout: {batch} images, STAR capture | {captured[0]:.2f} | {captured[1]} |")

    fields = rollout(True)
    group_ids = torch.arange(args.prompts).repeat_interleave(args.group)
    records = [{"prompt": "p", "tag": "single_object", "include": [{"class": "dog", "count": 1}]}] * batch
    rollouts = Rollouts(["p"] * batch, records, group_ids, cond, sigmas, core_mask=core_mask,
                        trained=trained_steps(None, args.steps, cfg.train.train_fraction), **fields)
    rewards = torch.linspace(0, 1, batch)  # spread inside every group: every rollout trains
    add_lora(transformer, cfg.train.lora_rank, cfg.train.lora_alpha, cfg.train.lora_targets, seed=0)
    transformer.to(device)
    objective = build_objective(cfg.train, transformer.config.patch_size)
    targets = objective.prepare(rollouts, rewards)
    policy = Policy(transformer, transformer, lambda: reference_policy(transformer), cfg.train.guidance_scale,
                    cfg.train.noise_level)
    chunk = torch.arange(min(args.minibatch, batch), device=device)
    mini, mini_targets = rollouts.select(chunk), targets.select(chunk)

    def train_step() -> None:
        transformer.train()
        for t in rollouts.trained:
            loss, _ = objective.step_loss(policy, mini, mini_targets, t)
            (loss / len(rollouts.trained)).backward()
        transformer.zero_grad(set_to_none=True)

    for checkpointing in (False, True):
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        seconds, memory = timed(train_step, device, args.repeats)
        print(f"| training minibatch: {len(chunk)} rollouts x {len(rollouts.trained)} steps, "
              f"LoRA r{cfg.train.lora_rank}, gradient checkpointing {'on' if checkpointing else 'off'} | "
              f"{seconds:.2f} | {memory} |")
    print(f"\nSTAR capture overhead (rollout with / without): {captured[0] / plain[0]:.3f}")
    print(f"parameters: transformer "
          f"{sum(p.numel() for p in transformer.parameters() if not p.requires_grad) / 1e9:.3f} B "
          f"frozen, LoRA {sum(p.numel() for p in transformer.parameters() if p.requires_grad) / 1e6:.2f} M trained")


if __name__ == "__main__":
    main()
