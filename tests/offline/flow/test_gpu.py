"""The same TV-L1 code on CPU and CUDA: agreement with each other and with OpenCV's stored references, and the
CUDA-graph replay of the fixed schedule (offline/flow/graphs.py) against eager CUDA.

The GPU machine has no cv2.optflow: OpenCV's flow for 3 real pairs was computed on the CPU machine and is stored
in tests/offline/flow/flow_ref.npz (tests/offline/flow/make_reference.py). Skipped without CUDA (`gpu` marker).
Every test runs eager kernels or CUDA graphs, never torch.compile (minutes per process on the H200): each takes
seconds, so the prepared GPU run's first step always finishes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import torch.nn.functional as F

from offline.config import FlowConfig
from offline.flow import TVL1, FlowEstimator, TVL1Params
from offline.flow.graphs import GraphedTVL1

pytestmark = pytest.mark.gpu

REF = Path(__file__).parent / "flow_ref.npz"


@pytest.fixture(scope="module")
def ref():
    d = np.load(REF)
    return torch.from_numpy(d["i0"]).float(), torch.from_numpy(d["i1"]).float(), torch.from_numpy(d["flow"].astype(np.float32))


def epe(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a.cpu() - b.cpu(), dim=1).mean(dim=(1, 2))


BUDGET = TVL1Params(nscales=3, warps=1, inner_iterations=10, outer_iterations=1)


def test_cuda_matches_opencv_reference(ref):
    """Full OpenCV parameters on CUDA (eager kernels): same EPE bound as the CPU test (test_flow_accuracy)."""
    i0, i1, flow = ref
    ours = TVL1(TVL1Params(), compile=False)(i0.cuda(), i1.cuda())
    assert ours.is_cuda and ours.shape == flow.shape
    e = epe(ours, flow)
    assert float(e.mean()) <= 0.025 and float(e.max()) <= 0.05, e.tolist()


def test_cpu_and_cuda_agree(ref):
    """Short fixed-length runs agree to float tolerance (CPU eager vs CPU compiled: 1.5e-3 px max); full runs agree within TV-L1's own noise floor
    (a last-bit difference moves the per-warp stopping point, see test_flow_accuracy's note)."""
    i0, i1, _ = ref
    short = TVL1Params(nscales=2, warps=2, inner_iterations=10, outer_iterations=2, epsilon=1e-9)
    cpu = TVL1(short, compile=False)(i0, i1)
    gpu = TVL1(short, compile=False)(i0.cuda(), i1.cuda()).cpu()
    assert (gpu - cpu).abs().max() < 5e-3, float((gpu - cpu).abs().max())
    full_cpu = TVL1(TVL1Params(), compile=False)(i0, i1)
    full_gpu = TVL1(TVL1Params(), compile=False)(i0.cuda(), i1.cuda())
    assert float(epe(full_gpu, full_cpu).max()) <= 0.025


def test_batch_of_many_pairs_equals_pairs_alone(ref):
    """The batch dimension is real: 64 pairs in one call give each pair's flow as computed alone."""
    i0, i1, _ = ref
    reps = 22
    big = TVL1(TVL1Params(), compile=False)(i0.repeat(reps, 1, 1).cuda(), i1.repeat(reps, 1, 1).cuda())
    alone = TVL1(TVL1Params(), compile=False)(i0.cuda(), i1.cuda())
    assert big.shape[0] == 3 * reps
    torch.testing.assert_close(big[-3:], alone, atol=1e-3, rtol=0)


def small(x: torch.Tensor, size: int = 128) -> torch.Tensor:
    """(B, H, W) frames area-resized to size x size, on CUDA (what bench/gpu_run.load_pairs does)."""
    return F.interpolate(x[:, None], size=(size, size), mode="area")[:, 0].cuda()


def test_graphs_capture_in_seconds_and_match_eager(ref):
    """Buckets 1..8 at 128 px with the cheap budget capture in seconds; 3 pairs (bucket 4, one flat padding pair)
    replay to eager CUDA's flow; the iterations per scale come back too."""
    i0, i1, _ = ref
    x0, x1 = small(i0), small(i1)
    g = GraphedTVL1(BUDGET)
    seconds = g.capture(128, 128, max_batch=8)
    assert seconds < 30, seconds
    assert [k[0] for k in g.captured] == [1, 2, 4, 8]
    eager, es = TVL1(BUDGET, compile=False)(x0, x1, return_stats=True)
    got, gs = g(x0, x1, return_stats=True)
    assert got.is_cuda and got.shape == eager.shape
    assert float(epe(got, eager).max()) < 1e-3, epe(got, eager).tolist()
    for a, b in zip(gs.iterations, es.iterations):  # padding may change a matmul's kernel: a stop may move by one
        assert int((a.cpu() - b.cpu()).abs().max()) <= 1, (gs.iterations, es.iterations)
    assert len(g.captured) == 4  # no new capture for a batch inside the buckets


def test_graph_replays_new_data(ref):
    """The same graph, fed other pairs (the reversed ones), computes their flow, not the captured call's."""
    i0, i1, _ = ref
    x0, x1 = small(i0), small(i1)
    g = GraphedTVL1(BUDGET)
    forward = g(x0, x1).clone()
    backward = g(x1, x0)
    assert len(g.captured) == 1
    assert float(epe(backward, TVL1(BUDGET, compile=False)(x1, x0)).max()) < 1e-3
    assert float((backward - forward).abs().max()) > 0.1  # really another flow (the moving objects' reversed)


def test_graphed_warm_start_and_opencv_parameters(ref):
    """A warm-started graph (init is a static input too) matches eager's warm start; at 256 px with OpenCV's full
    parameters the graphed flow keeps the OpenCV-reference EPE bound."""
    i0, i1, flow = ref
    x0, x1 = small(i0), small(i1)
    warm = TVL1Params(nscales=1, warps=1, inner_iterations=10, outer_iterations=1)
    init = TVL1(BUDGET, compile=False)(x0, x1)
    eager = TVL1(warm, compile=False)(x0, x1, init=init)
    got = GraphedTVL1(warm)(x0, x1, init=init)
    assert float(epe(got, eager).max()) < 1e-3
    full = GraphedTVL1(TVL1Params())(i0.cuda(), i1.cuda())
    e = epe(full, flow)
    assert float(e.mean()) <= 0.025 and float(e.max()) <= 0.05, e.tolist()


def test_estimator_with_cuda_graphs_matches_eager(ref):
    """flow.cuda_graphs through FlowEstimator (cold and warm-started solvers captured up front): eager CUDA's flow."""
    i0, i1, _ = ref
    x0, x1 = small(i0), small(i1)
    budget = {"scales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 1, "warm_start": True}
    graphed = FlowEstimator(FlowConfig(backend="torch", cuda_graphs=True, **budget), "cuda")
    eager = FlowEstimator(FlowConfig(backend="torch", compile="off", **budget), "cuda")
    assert graphed.capture(128, 128, max_batch=4) < 30
    cold = eager(x0, x1)
    assert float(epe(graphed(x0, x1), cold).max()) < 1e-3
    assert float(epe(graphed(x0, x1, init=cold), eager(x0, x1, init=cold)).max()) < 1e-3
