"""The fixed-schedule TV-L1 (no host sync: what a CUDA graph captures) and the bucketed static-buffer path of
offline/flow/graphs.py, checked on the CPU against today's eager solver on real Ped2 and vtest pairs at 64 px.

The fixed schedule runs every iteration but freezes a stopped pair with the same mask the eager loop uses, so it is
bit-identical whenever the per-pair stopping points are the same (always, on one device). Capture and replay
themselves need CUDA: tests/offline/flow/test_gpu.py.
"""
from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from offline.config import FlowConfig
from offline.flow import FlowEstimator, TVL1, TVL1Params
from offline.flow.graphs import GraphedTVL1, bucket_for, compile_cache
from tests.offline.flow.frames import real_pairs

# the budget sweep's cheap point and a shortened OpenCV schedule whose pairs stop at different iterations
BUDGET = TVL1Params(nscales=3, warps=1, inner_iterations=10, outer_iterations=1)
STOPPING = TVL1Params(nscales=2, warps=2, inner_iterations=15, outer_iterations=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: 64-px pairs gain nothing from a second one, and on a loaded 2-core machine two threads
    spinning against other jobs make this file 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(ped2, vtest) -> tuple[torch.Tensor, torch.Tensor]:
    """(6, 64, 64) first and second frames: 4 Ped2 pairs (a cyclist, carts, walkers) and 2 vtest pairs."""
    i0, i1, _ = real_pairs(ped2, vtest, size=64)
    pick = [0, 4, 8, 12, 16, 20]
    return torch.from_numpy(i0[pick]), torch.from_numpy(i1[pick])


def epe(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) mean end-point error between two (B, 2, H, W) flows."""
    return torch.linalg.vector_norm(a - b, dim=1).mean(dim=(1, 2))


@pytest.mark.parametrize("params", [BUDGET, STOPPING, replace(STOPPING, epsilon=1e-9)], ids=["budget", "stopping", "no-stop"])
def test_fixed_schedule_is_bit_identical_to_eager(pairs, params):
    """Same flow and the same iterations per pair and scale, whether pairs stop early (stopping) or never (no-stop)."""
    i0, i1 = pairs
    eager, es = TVL1(params, compile=False)(i0, i1, return_stats=True)
    fixed, fs = TVL1(params, compile=False, fixed_schedule=True)(i0, i1, return_stats=True)
    assert torch.equal(fixed, eager)
    for a, b in zip(fs.iterations, es.iterations):
        assert torch.equal(a, b)
    assert torch.equal(fs.unfinished, es.unfinished)
    if params is STOPPING:  # the case that matters: pairs really stopped at different points
        assert len({int(v) for v in es.iterations[0]}) > 1, es.iterations[0].tolist()


def test_cuda_cadence_of_the_stop_check_changes_nothing(pairs):
    """Checking "all stopped" once per outer iteration (CUDA's eager cadence) or never (fixed) gives the same flow."""
    i0, i1 = pairs
    cadence = TVL1(STOPPING, compile=False, sync_every=STOPPING.inner_iterations)(i0, i1)
    fixed = TVL1(STOPPING, compile=False, fixed_schedule=True)(i0, i1)
    assert torch.equal(fixed, cadence)


def test_stopping_rule_costs_a_bounded_epe(pairs):
    """Where the schedule stops differently (the rule on, against running every iteration), flows differ by a
    bounded EPE: the rule only skips iterations that move the flow by less than epsilon per pixel."""
    i0, i1 = pairs
    stop = TVL1(STOPPING, compile=False, fixed_schedule=True)(i0, i1)
    full = TVL1(replace(STOPPING, epsilon=1e-9), compile=False, fixed_schedule=True)(i0, i1)
    e = epe(stop, full)
    assert float(e.max()) < 0.1 and float(e.mean()) < 0.03, e.tolist()


@pytest.mark.parametrize(("batch", "bucket"), [(1, 1), (2, 2), (3, 4), (5, 8), (200, 256), (256, 256), (300, 256)])
def test_bucket_for(batch, bucket):
    assert bucket_for(batch) == bucket


def test_bucket_for_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="batch must be >= 1"):
        bucket_for(0)


def test_bucket_padding_gives_the_unpadded_flow(pairs):
    """5 pairs padded to bucket 8 (flat padding pairs) and the 6 pairs in chunks of the largest bucket (4, 2)
    give each pair's flow as the unpadded eager batch does, iterations included."""
    i0, i1 = pairs
    eager, es = TVL1(STOPPING, compile=False)(i0, i1, return_stats=True)
    padded = GraphedTVL1(STOPPING, graphs=False, first_outer=None)
    flow = padded(i0[:5], i1[:5])
    assert torch.equal(flow, eager[:5])
    assert padded.captured == [(8, 64, 64, False, torch.device("cpu"), True)]
    chunked = GraphedTVL1(STOPPING, buckets=(1, 2, 4), graphs=False, first_outer=None)
    flow, stats = chunked(i0, i1, return_stats=True)
    assert torch.equal(flow, eager)
    assert stats.sizes == es.sizes and all(torch.equal(a, b) for a, b in zip(stats.iterations, es.iterations))
    single = padded(i0[3], i1[3])  # (H, W) in, (2, H, W) out, as TVL1
    assert torch.equal(single, eager[3])


def test_cut_first_pass_then_whole_schedule_for_unfinished_pairs_is_exact(pairs):
    """The first pass cut to one outer iteration per warp, the pairs it left unfinished run again with the whole
    schedule: bit-identical to eager, iterations and unfinished flags included, at a fraction of the iterations."""
    i0, i1 = pairs
    params = replace(STOPPING, inner_iterations=30)  # 3 of the 6 pairs need more than 30 in some warp
    eager, es = TVL1(params, compile=False)(i0, i1, return_stats=True)
    cut = GraphedTVL1(params, graphs=False)  # first_outer=1 of 2
    flow, stats = cut(i0, i1, return_stats=True)
    assert torch.equal(flow, eager)
    assert all(torch.equal(a, b) for a, b in zip(stats.iterations, es.iterations))
    assert torch.equal(stats.unfinished, es.unfinished)
    assert 0 < cut.recomputed < len(i0), cut.recomputed  # some pairs needed the second outer iteration, not all
    roomy = replace(STOPPING, inner_iterations=60, outer_iterations=3)  # real pairs stop well within 60 per warp
    g = GraphedTVL1(roomy, graphs=False)
    assert torch.equal(g(i0, i1), TVL1(roomy, compile=False)(i0, i1))
    assert g.recomputed == 0 and all(not whole for *_, whole in g.captured)


def test_static_buffers_take_new_data_each_call(pairs):
    """A second call through the same slot computes its own pairs, not the first call's (the buffers are refilled)."""
    i0, i1 = pairs
    g = GraphedTVL1(BUDGET, graphs=False)
    first = g(i0[:3], i1[:3])
    second = g(i0[3:6], i1[3:6])
    assert len(g.captured) == 1
    assert torch.equal(second, TVL1(BUDGET, compile=False)(i0[3:6], i1[3:6]))
    assert not torch.equal(first, second)


def test_slots_made_in_inference_mode_serve_later_calls(pairs):
    """The scorer calls under torch.inference_mode, vad eval under no_grad: static buffers made by either serve both."""
    i0, i1 = pairs
    g = GraphedTVL1(BUDGET, graphs=False)
    with torch.inference_mode():
        first = g(i0[:2], i1[:2])
    assert torch.equal(g(i0[:2], i1[:2]), first)


def test_warm_start_init_in_the_fixed_schedule(pairs):
    """`init` (warm start) works in the fixed schedule and through the bucketed path: the eager warm result."""
    i0, i1 = pairs
    warm = replace(BUDGET, nscales=1)
    init = TVL1(BUDGET, compile=False)(i0, i1)  # any plausible flow of the same pairs
    eager = TVL1(warm, compile=False)(i1, i0, init=-init)
    fixed = TVL1(warm, compile=False, fixed_schedule=True)(i1, i0, init=-init)
    assert torch.equal(fixed, eager)
    g = GraphedTVL1(warm, graphs=False)
    assert torch.equal(g(i1, i0, init=-init), eager)
    assert not torch.equal(eager, TVL1(warm, compile=False)(i1, i0))  # the init is really used
    assert (8, 64, 64, True, torch.device("cpu"), True) in g.captured  # BUDGET has one outer iteration: no cut
    with pytest.raises(ValueError, match="init must be"):
        g(i1, i0, init=init[:5])


def test_estimator_uses_graphs_only_on_cuda(pairs):
    """flow.cuda_graphs selects the graphed solver on CUDA; on the CPU the estimator keeps its eager solver (same
    flow), and capture() has nothing to do."""
    i0, i1 = pairs
    cfg = FlowConfig(backend="torch", cuda_graphs=True, compile="off", scales=3, warps=1, inner_iterations=10,
                     outer_iterations=1)
    est = FlowEstimator(cfg, "cpu")
    assert isinstance(est._impl, TVL1) and not isinstance(est._impl, GraphedTVL1)
    assert est.capture(64, 64, 16) == 0.0
    assert torch.equal(est(i0[:2], i1[:2]), TVL1(BUDGET, compile=False)(i0[:2], i1[:2]))


def test_buckets_must_ascend_and_the_cut_be_positive():
    with pytest.raises(ValueError, match="ascending"):
        GraphedTVL1(BUDGET, buckets=(4, 2))
    with pytest.raises(ValueError, match="first_outer"):
        GraphedTVL1(BUDGET, first_outer=0)


def test_compile_cache_points_inductor_at_the_configured_directory(tmp_path, monkeypatch):
    """flow.compile_cache_dir becomes TORCHINDUCTOR_CACHE_DIR (created); None leaves torch's default alone."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert compile_cache(None) is None
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    got = compile_cache(tmp_path / "inductor")
    assert got == (tmp_path / "inductor").resolve() and got.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(got)
    FlowEstimator(FlowConfig(backend="torch", compile_cache_dir=tmp_path / "from-config"), "cpu")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "from-config").resolve())
