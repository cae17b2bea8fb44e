"""Baseline PAs: LNTRA patch (SmoothMixS), skip-frame, Gaussian and learned noise."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offline.models.noise_generator import NoiseGenerator
from offline.pa.baselines import (gaussian_pa, generated_intruders, learned_noise_pa, lntra_patch, noise_generator_loss,
                                  sample_skip_frame, skip_frame, smoothmix_s)
from offline.pa.intruders import load_intruders


def test_smoothmix_s_is_one_inside_and_ramps_to_the_edge():
    m = smoothmix_s(20, 20, 0.25)
    assert m[10, 10] == 1 and m.min() >= 0 and m.max() <= 1
    assert m[0, 10] < 0.2 and m[0, 0] < m[0, 10]


def test_lntra_patch_blends_only_under_its_weights_and_moves():
    clip = torch.rand(3, 8, 64, 64) * 2 - 1
    intruder = generated_intruders(1, 32, np.random.default_rng(0))[0]
    out, weights = lntra_patch(clip, intruder, np.random.default_rng(1), max_size=0.5, max_speed=10)
    untouched = (weights == 0)[None].expand_as(clip)
    assert torch.equal(out[untouched], clip[untouched])
    assert (weights > 0).any(dim=(1, 2)).all()  # the patch is in every frame
    centres = [np.argwhere(w.numpy() == w.max().item()).mean(0) for w in weights]
    steps = np.abs(np.diff(centres, axis=0))
    assert steps.max() <= 10 + 1 and steps.sum() > 0
    assert (weights.sum(dim=(1, 2)) <= (0.5 * 64) ** 2).all()
    again, _ = lntra_patch(clip, intruder, np.random.default_rng(1))
    assert torch.equal(out, again)


def test_skip_frame_samples_with_a_stride():
    frames = torch.arange(100.0).reshape(1, 100, 1, 1).expand(3, 100, 2, 2)
    start, stride = sample_skip_frame(100, 16, [2, 3, 4, 5], np.random.default_rng(0))
    out = skip_frame(frames, start, stride)
    assert out.shape == (3, 16, 2, 2)
    assert torch.equal(out[0, :, 0, 0], torch.tensor(start + stride * np.arange(16), dtype=torch.float32))
    assert sample_skip_frame(20, 16, [2, 3], np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="needs frame"):
        skip_frame(frames, 90, 5)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0])
def test_gaussian_pa_noise_level(sigma):
    x = torch.zeros(3, 4, 32, 32)
    out = gaussian_pa(x, sigma, np.random.default_rng(0), clip=False)
    assert abs(out.std().item() - sigma) < 0.05 * sigma
    assert gaussian_pa(x, sigma, np.random.default_rng(0)).abs().max() <= 1
    assert torch.equal(out, gaussian_pa(x, sigma, np.random.default_rng(0), clip=False))


def test_learned_noise_pa_clips_and_recomputes_the_noise():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    g = NoiseGenerator(3)
    noise = g(x)
    x_p, eff = learned_noise_pa(x, noise)
    assert x_p.min() >= -1 and x_p.max() <= 1
    torch.testing.assert_close(x + eff, x_p)
    inside = (x + noise).abs() < 1
    torch.testing.assert_close(eff[inside], noise[inside])
    loss = noise_generator_loss(x_p, x_p, eff)
    loss.backward()
    assert loss.item() < 0 and next(g.parameters()).grad is not None


def test_intruders_generated_or_from_a_folder(tmp_path):
    gen = load_intruders(None, size=24, count=5)
    assert gen.shape == (5, 3, 24, 24) and gen.min() >= -1 and gen.max() <= 1
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.full((10, 20, 3), 255, np.uint8))
    loaded = load_intruders(tmp_path, size=8)
    assert loaded.shape == (1, 3, 8, 8) and torch.allclose(loaded, torch.ones(1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        load_intruders(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_intruders(tmp_path / "missing")
