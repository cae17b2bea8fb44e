"""Masks: coverage bounds, determinism, connected components, motion masks on real Ped2 and synthetic clips."""
from __future__ import annotations

import numpy as np
import pytest

from offline.data.readers import open_dataset, read_frames
from offline.pa.masks import (fill_empty_with_random, label_components, mask_bbox, median_background,
                              motion_masks, object_masks, random_mask)


@pytest.mark.parametrize("lo,hi", [(0.02, 0.3), (0.1, 0.12), (0.0, 0.05), (0.4, 0.6)])
def test_random_mask_coverage_stays_in_bounds_over_many_seeds(lo, hi):
    covs = [random_mask(64, 96, np.random.default_rng(seed), lo, hi).mean() for seed in range(150)]
    assert min(covs) >= lo - 1e-9 and max(covs) <= hi + 1e-9
    assert np.std(covs) > 0 or hi - lo < 0.03  # masks vary with the seed


def test_random_mask_is_seeded_and_rejects_bad_bounds():
    a = random_mask(32, 32, np.random.default_rng(3))
    assert np.array_equal(a, random_mask(32, 32, np.random.default_rng(3)))
    assert not np.array_equal(a, random_mask(32, 32, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="min=0.5, max=0.2"):
        random_mask(32, 32, np.random.default_rng(0), 0.5, 0.2)


def test_label_components_8_connectivity_and_areas():
    m = np.zeros((20, 30), bool)
    m[2:5, 2:5] = True
    m[5, 5] = True  # diagonal neighbour: same component
    m[10:15, 10:20] = True
    m[0, 29] = True
    labels, n = label_components(m)
    assert n == 3
    assert sorted(np.bincount(labels.ravel())[1:].tolist()) == [1, 10, 50]
    assert labels[5, 5] == labels[2, 2] and (labels > 0).sum() == m.sum()
    assert label_components(np.zeros((4, 4), bool))[1] == 0


def _moving_square_clip(t=12, size=64, side=10):
    rng = np.random.default_rng(0)
    bg = rng.uniform(60, 120, (size, size)).astype(np.float32)
    frames, truth = [], []
    for i in range(t):
        f, m = bg.copy(), np.zeros((size, size), bool)
        y, x = 20, 4 + 4 * i
        f[y : y + side, x : x + side] = 230
        m[y : y + side, x : x + side] = True
        frames.append(f)
        truth.append(m)
    return np.stack(frames), np.stack(truth)


def test_motion_masks_find_a_moving_square():
    gray, truth = _moving_square_clip()
    masks = motion_masks(gray)
    for m, tr in zip(masks, truth):
        assert (m & tr).sum() / tr.sum() > 0.95  # the object is covered
        assert (m & ~tr).sum() < 2 * tr.sum()  # dilation margin only, no background speckle
    assert mask_bbox(masks[0]) is not None


def test_static_clip_has_no_objects_and_falls_back_to_random_masks():
    gray = np.repeat(np.random.default_rng(1).uniform(0, 255, (1, 48, 48)).astype(np.float32), 6, axis=0)
    masks = motion_masks(gray)
    assert not masks.any()
    filled, is_object = fill_empty_with_random(masks, np.random.default_rng(0), 0.05, 0.2)
    assert not is_object.any()
    assert all(0.05 <= m.mean() <= 0.2 for m in filled)


def test_object_masks_cover_moving_pedestrians_on_real_ped2(ped2):
    clip = next(c for c in open_dataset(ped2).train if c.id == "01")
    frames = np.stack(list(read_frames(clip, 256)))[:60]
    masks = object_masks(frames)
    gray = frames[..., 0].astype(np.float32)
    differs = np.abs(gray - median_background(gray).numpy()) > 10
    assert masks.reshape(len(masks), -1).any(axis=1).mean() > 0.9  # pedestrians are found in nearly every frame
    inside = (masks & differs).sum() / masks.sum()
    assert inside > 0.5, f"only {inside:.2f} of mask pixels differ from the median background"
    assert masks.mean() < 0.2


def test_mask_bbox_union_over_time():
    m = np.zeros((3, 10, 10), bool)
    m[0, 1, 2] = m[2, 5, 7] = True
    assert mask_bbox(m) == (1, 2, 5, 6)
    assert mask_bbox(m[1]) is None


def test_segmenter_hook_replaces_motion_masks_and_is_checked():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    masks = object_masks(frames, segmenter=lambda f: f[..., 0] == 0)
    assert masks.all()
    with pytest.raises(ValueError, match=r"segmenter returned masks of shape \(3, 8, 8\)"):
        object_masks(frames, segmenter=lambda f: np.zeros((3, 8, 8), bool))
    from offline.pa.precompute import load_segmenter

    with pytest.raises(ValueError, match="pa.segmenter: expected 'module:factory'"):
        load_segmenter("no_colon")
