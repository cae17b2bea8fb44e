"""Flow mix-up: convex combination inside the box, identity outside, seeded, Beta(0.4, 0.4) weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offline.pa.temporal import FlowMixup, apply_flow_mixup, flow_mixup


@pytest.mark.parametrize("shape", [(3, 16, 32, 40), (2, 3, 16, 32, 40)])
def test_mixup_is_convex_inside_the_box_and_identity_outside(shape):
    flow = torch.randn(shape)
    box = (5, 7, 9, 11)
    out, mix = flow_mixup(flow, box, np.random.default_rng(0))
    y0, x0, h, w = box
    sy, sx = mix.source
    expected = mix.lam * flow[..., y0 : y0 + h, x0 : x0 + w] + (1 - mix.lam) * flow[..., sy : sy + h, sx : sx + w]
    torch.testing.assert_close(out[..., y0 : y0 + h, x0 : x0 + w], expected)
    outside = torch.ones(shape[-2:], dtype=torch.bool)
    outside[y0 : y0 + h, x0 : x0 + w] = False
    assert torch.equal(out[..., outside], flow[..., outside])
    assert 0 <= mix.lam <= 1


def test_overlapping_source_reads_the_original_flow():
    flow = torch.arange(100.0).reshape(1, 1, 10, 10)
    out = apply_flow_mixup(flow, FlowMixup(box=(0, 0, 4, 4), source=(2, 2), lam=0.5))
    torch.testing.assert_close(out[0, 0, :4, :4], 0.5 * flow[0, 0, :4, :4] + 0.5 * flow[0, 0, 2:6, 2:6])


def test_same_seed_same_pa_and_beta_weights():
    flow = torch.randn(3, 4, 20, 20)
    a, _ = flow_mixup(flow, (2, 2, 5, 5), np.random.default_rng(7))
    b, _ = flow_mixup(flow, (2, 2, 5, 5), np.random.default_rng(7))
    assert torch.equal(a, b)
    rng = np.random.default_rng(0)
    lams = np.array([flow_mixup(flow, (0, 0, 3, 3), rng)[1].lam for _ in range(2000)])
    assert abs(lams.mean() - 0.5) < 0.03
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.3  # Beta(0.4, 0.4) is U-shaped


def test_box_outside_the_frame_is_an_error():
    with pytest.raises(ValueError, match=r"box \(0, 0, 30, 5\)"):
        flow_mixup(torch.zeros(3, 2, 20, 20), (0, 0, 30, 5), np.random.default_rng(0))
