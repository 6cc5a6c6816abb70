"""The token-grounding loss of base pretraining: its formula, the differentiable capture it reads,
the scenes' boxes it is measured against, and a pretraining run that lowers it."""

from __future__ import annotations

import pytest
import torch

from star.config import BaseConfig
from star.method.attention import AttentionCapture
from star.models.sd3 import build_mini_sd3
from star.rl import checkpoint
from star.world.grounding import grounding_loss, grounding_targets
from star.world.pretrain import latent_set, render_world_dataset, train_transformer
from star.world.render import Layout
from star.world.vocab import BACKGROUND_RGB
from tests.test_models import CHARSET, TINY, WORDS


def test_the_loss_is_the_squared_share_of_attention_off_the_objects() -> None:
    objects = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    attention = torch.tensor([[0.3, 0.3, 0.2, 0.2],   # share 0.6 -> (1 - 0.6)^2
                              [0.0, 0.0, 0.0, 0.5],   # all on the object -> 0
                              [0.0, 0.0, 0.0, 0.0],   # no core tokens (a dropped caption): left out
                              [0.1, 0.2, 0.3, 0.4]],  # no objects: left out
                             requires_grad=True)
    loss, share = grounding_loss(attention, objects)
    assert loss.item() == pytest.approx((0.4**2 + 0.0) / 2) and share.item() == pytest.approx(0.8)
    loss.backward()
    assert attention.grad[0, 2] > 0 > attention.grad[0, 0], "attention off the objects is pushed down, on them up"
    assert attention.grad[2:].abs().sum() == 0
    empty, _ = grounding_loss(torch.zeros(2, 4, requires_grad=True), objects[:2])
    assert empty.item() == 0 and empty.requires_grad


def test_the_differentiable_capture_keeps_the_graph_and_the_default_does_not() -> None:
    pipe = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)
    transformer = pipe.transformer
    latents = torch.randn(2, transformer.config.in_channels, 16, 16)
    embeds = torch.randn(2, 8, transformer.config.joint_attention_dim)
    pooled = torch.randn(2, transformer.config.pooled_projection_dim)
    core = torch.zeros(2, 8)
    core[:, 2] = 1.0
    for differentiable in (True, False):
        capture = AttentionCapture(transformer, differentiable=differentiable)
        with capture.recording(core):
            transformer(hidden_states=latents, encoder_hidden_states=embeds, pooled_projections=pooled,
                        timestep=torch.tensor([500.0, 500.0]))
        maps = capture.result()
        capture.remove()
        assert maps.requires_grad == differentiable and maps.shape == (2, (16 // transformer.config.patch_size) ** 2)


def test_rendered_scenes_keep_the_boxes_that_hold_their_content() -> None:
    data = render_world_dataset(24, 32, seed=3, layout=Layout(8), progress=False)
    assert len(data.records) == len(data.boxes) == 24
    background = torch.tensor(BACKGROUND_RGB, dtype=torch.uint8)[:, None, None]
    for image, boxes in zip(data.images, data.boxes):
        inside = torch.zeros(32, 32, dtype=torch.bool)
        for x0, y0, x1, y1 in boxes:
            inside[int(y0):int(y1), int(x0):int(x1)] = True
        painted = (image != background).any(0)
        assert not (painted & ~inside).any(), "every painted pixel lies in a box"
        assert boxes and painted.any()


def _share(pipe, latents: torch.Tensor, grounded) -> float:
    """Mean share of the core tokens' attention on the objects, on the clean latents with their
    captions (CLIP and T5 embeddings from the pipeline's own encoders)."""
    from star.models.sd3 import encode_prompts

    capture = AttentionCapture(pipe.transformer)
    with torch.no_grad(), capture.recording(grounded.grounding.core):
        embeds, pooled = encode_prompts(pipe, grounded.captions)
        pipe.transformer(hidden_states=latents, encoder_hidden_states=embeds, pooled_projections=pooled,
                         timestep=torch.full((len(latents),), 500.0))
    capture.remove()
    return grounding_loss(capture.result(), grounded.grounding.objects)[1].item()


@pytest.mark.slow
def test_pretraining_with_the_loss_raises_the_share_of_attention_on_the_objects(tmp_path) -> None:
    pipe = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)
    data = render_world_dataset(64, 32, seed=1, layout=Layout(8), progress=False)
    latents = torch.randn(64, pipe.transformer.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(2))
    grounded = latent_set(pipe, latents, data, grounded=True)
    grid = 16 // pipe.transformer.config.patch_size
    reference = grounding_targets(pipe, data.captions, data.records, data.boxes, 32, grid)
    assert torch.equal(grounded.grounding.objects, reference.objects) and grounded.grounding.core.sum() > 0
    before = _share(pipe, latents, grounded)
    after = {}
    for weight in (0.0, 1.0):  # the same steps without the loss: the control
        trained = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)
        logged: list[dict[str, float]] = []
        cfg = BaseConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=0, grounding_weight=weight,
                         checkpoint_every=1000, caption_dropout=0.0, ema_decay=0.0)
        train_transformer(trained, latent_set(trained, latents, data, grounded=weight > 0), cfg,
                          checkpoint.seed_everything(0), tmp_path / f"{weight}.ckpt",
                          on_metrics=lambda _, metrics, step, logged=logged: logged.append(metrics))
        assert ({"fm_loss", "grounding_loss", "grounding_share"} <= set(logged[0])) == (weight > 0)
        after[weight] = _share(trained, latents, grounded)
    assert after[1.0] > max(before, after[0.0]) + 0.04, (before, after)


@pytest.mark.slow
def test_a_saved_base_grounded_afterwards_equals_one_pretrained_with_the_phase(tmp_path) -> None:
    """The grounding phase seeds itself: fine-tuning a saved, ungrounded base with it gives the
    weights that pretraining with it gives, bit for bit (so a base can be grounded without
    repeating its pretraining)."""
    from star.config import load_config
    from star.models.sd3 import load_pipeline
    from star.world.pretrain import ground_base, pretrain_base
    from tests.conftest import MICRO

    cfg = load_config(MICRO)
    assert cfg.base.grounding_steps > 0 and cfg.base.grounding_weight > 0
    logged: list[tuple[str, dict[str, float]]] = []
    grounded = pretrain_base(cfg, tmp_path / "with", on_metrics=lambda phase, m, _: logged.append((phase, m)))
    assert any(phase == "grounding" and "grounding_share" in m for phase, m in logged)
    assert not any(phase == "transformer" and "grounding_share" in m for phase, m in logged), "the loss waits"
    ungrounded_cfg = cfg.model_copy(update={"base": cfg.base.model_copy(update={"grounding_steps": 0})})
    pretrain_base(ungrounded_cfg, tmp_path / "without").save_pretrained(tmp_path / "saved")
    saved = load_pipeline(tmp_path / "saved")
    before = {k: v.clone() for k, v in saved.transformer.state_dict().items()}
    ground_base(saved, cfg, tmp_path / "later.ckpt")
    after = saved.transformer.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the phase moves the weights"
    reference = grounded.transformer.state_dict()
    assert all(torch.equal(reference[k], after[k]) for k in reference)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        ours, theirs = getattr(saved, name).state_dict(), getattr(grounded, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
