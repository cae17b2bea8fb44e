"""Spatial PAs: tiny random CompVis-layout LDM round-trips through save/load; the fallback; paste-back exactness."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from offline.pa.inpaint import (LDMInpainter, TeleaInpainter, build_ldm, compvis_unet_config, compvis_vq_config,
                                make_inpainter, spatial_pa)
from offline.pa.masks import random_mask


def tiny_ldm(steps=3) -> LDMInpainter:
    unet_cfg = compvis_unet_config(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                                   sample_size=16, head_dim=8)
    vq_cfg = compvis_vq_config(ch=32, ch_mult=(1, 2), num_res_blocks=1, n_embed=16, resolution=32)
    return LDMInpainter(*build_ldm(unet_cfg, vq_cfg, num_heads=2), steps=steps, batch_size=2, num_heads=2)


def _inputs(n=3, size=32):
    rng = np.random.default_rng(0)
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    masks = torch.from_numpy(np.stack([random_mask(size, size, rng, 0.1, 0.3) for _ in range(n)]))
    return images, masks


def test_tiny_ldm_round_trips_offline_and_changes_only_masked_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ldm = tiny_ldm()
    assert ldm.unet.config.in_channels == 7 and ldm.unet.conv_in.in_channels == 7
    images, masks = _inputs()
    out = ldm(images, masks, seed=5)
    outside = ~masks[:, None].expand_as(images)
    assert torch.equal(out[outside], images[outside])  # bit-exact outside the mask
    assert (out[~outside] != images[~outside]).float().mean() > 0.9  # inside: inpainted
    ldm.save_pretrained(tmp_path / "ldm")
    loaded = LDMInpainter.from_pretrained(tmp_path / "ldm", steps=3, batch_size=3)  # another batch split
    assert loaded.num_heads == 2
    torch.testing.assert_close(loaded(images, masks, seed=5), out, rtol=1e-4, atol=1e-4)
    assert len(loaded.scheduler.timesteps) == 3
    assert not torch.allclose(loaded(images, masks, seed=6), out)


def test_spatial_pa_on_clips_keeps_shape_and_unmasked_frames():
    ldm = tiny_ldm(steps=2)
    clip = torch.rand(2, 3, 4, 32, 32) * 2 - 1
    masks = torch.zeros(2, 4, 32, 32, dtype=torch.bool)
    masks[:, :, 8:16, 8:24] = True
    masks[1, 2] = False
    out = spatial_pa(clip, masks, ldm, seed=1)
    assert out.shape == clip.shape
    assert torch.equal(out[1, :, 2], clip[1, :, 2])
    assert torch.equal(out[..., :8, :], clip[..., :8, :])
    assert not torch.equal(out[..., 8:16, 8:24], clip[..., 8:16, 8:24])
    single = spatial_pa(clip[0], masks[0], ldm, seed=1)
    assert single.shape == clip[0].shape


def test_fallback_inpainter_fills_only_the_mask_and_logs_once(caplog):
    with caplog.at_level(logging.WARNING, logger="offline.pa.inpaint"):
        inp = make_inpainter(None)
    assert isinstance(inp, TeleaInpainter)
    assert len(caplog.records) == 1 and "pa.ldm_path is not set" in caplog.records[0].getMessage()
    images, masks = _inputs(size=48)
    out = inp(images, masks, seed=0)
    outside = ~masks[:, None].expand_as(images)
    assert torch.equal(out[outside], images[outside])
    assert not torch.equal(out[~outside], images[~outside])
    assert torch.equal(out, inp(images, masks, seed=0))


def test_missing_ldm_directory_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pa.ldm_path .*missing unet, vqvae, scheduler"):
        make_inpainter(tmp_path)


def test_bad_shapes_are_errors():
    ldm = tiny_ldm(steps=1)
    with pytest.raises(ValueError, match="masks must be"):
        ldm(torch.zeros(1, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible by 2"):
        ldm(torch.zeros(1, 3, 31, 31), torch.zeros(1, 31, 31, dtype=torch.bool))


@pytest.mark.gpu
def test_tiny_ldm_bf16_on_cuda_keeps_unmasked_pixels():
    ldm = tiny_ldm(steps=2)
    gpu = LDMInpainter(ldm.unet, ldm.vqvae, ldm.scheduler, steps=2, device="cuda", num_heads=2)
    assert gpu.dtype == torch.bfloat16
    images, masks = _inputs()
    out = gpu(images, masks)
    outside = ~masks[:, None].expand_as(images)
    assert torch.equal(out[outside], images[outside]) and torch.isfinite(out).all()
