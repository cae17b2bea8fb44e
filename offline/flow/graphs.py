"""TV-L1 on CUDA without the kernel-launch floor: the fixed-schedule solver replayed from CUDA graphs.

Eager TV-L1 on a GPU is bound by launches (tens of thousands of small kernels per call, ~1 s per call at any batch
up to 64 on an H200), and torch.compile of it takes minutes per process. A CUDA graph records those launches once
and replays them as one: the solver's `fixed_schedule` mode has no host sync (every pair runs the whole schedule,
the ones that met the stopping rule frozen by their masks), so a whole call is capturable. One graph per
(batch bucket, height, width, warm start or not), with static input and output buffers; a batch is padded with
flat frames up to its bucket (pairs are independent: the padding changes no real pair's flow) and a batch above
the largest bucket runs in chunks of it. A long schedule (OpenCV's 10 outer iterations per warp) first runs cut to
one outer iteration, and only pairs that needed more are run again with the whole schedule (GraphedTVL1): the
same flow at a fraction of the iterations. Graphs are captured on first use, or up front with `capture` (at scorer
start: seconds, not minutes). All graphs share one memory pool: they run one at a time on one stream.

`compile_cache` points torch.compile's artifacts (inductor's and triton's caches) at a directory the config names,
so a second process reuses the kernels the first one compiled.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from offline.flow.tvl1 import TVL1, TVL1Stats, as_batch, pyramid_sizes

logger = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket_for(batch: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket holding `batch` pairs (the largest bucket for bigger batches: they run in chunks)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return next((b for b in buckets if b >= batch), buckets[-1])


@dataclass
class _Slot:
    """One graph and its static buffers: inputs (i0, i1, init), outputs (flow, iterations per scale, unfinished)."""

    i0: torch.Tensor
    i1: torch.Tensor
    init: torch.Tensor | None
    out: tuple | None = None  # (flow, [iterations per scale], unfinished)
    graph: torch.cuda.CUDAGraph | None = None
    capture_s: float = 0.0


class GraphedTVL1:
    """`GraphedTVL1(params)(i0, i1, init=None)`: TVL1's call, replayed from a CUDA graph per batch bucket and size.

    A fixed schedule runs every iteration, and OpenCV's 10 x 30 per warp is ~15x what real pairs need (they meet
    the stopping rule after ~20-25). So the first pass is the schedule cut to `first_outer` outer iterations per
    warp; a pair still iterating when a warp's cut budget ran out (TVL1Stats.unfinished) is computed again with the
    whole schedule, alone (pairs are independent). A pair that stopped within the cut is frozen for the rest of the
    whole schedule anyway, so the result is the whole schedule's, bit for bit; the price is one host sync per call
    to look at the flags, and only when the cut is shorter than the schedule.

    Args:
        params: TV-L1 parameters (TVL1Params); the solver runs them as a fixed schedule, eager kernels.
        buckets: batch sizes graphs are captured for (ascending); a batch is padded to the next one.
        graphs: capture and replay CUDA graphs; None = on CUDA inputs. False runs the same padded static-buffer
            path eagerly (what the CPU tests check; no speed-up).
        first_outer: outer iterations per warp of the first pass (None: the whole schedule, no second pass).
    """

    def __init__(self, params, buckets: tuple[int, ...] = BUCKETS, graphs: bool | None = None, first_outer: int | None = 1):
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
            raise ValueError(f"buckets must be ascending positive batch sizes, got {buckets}")
        if first_outer is not None and first_outer < 1:
            raise ValueError(f"first_outer must be >= 1 or None, got {first_outer}")
        self.params = params
        self.solver = TVL1(params, compile=False, fixed_schedule=True)
        cut = params.outer_iterations if first_outer is None else min(first_outer, params.outer_iterations)
        self.first = self.solver if cut == params.outer_iterations else TVL1(
            replace(params, outer_iterations=cut), compile=False, fixed_schedule=True)
        self.buckets = tuple(buckets)
        self.graphs = graphs
        self.recomputed = 0  # pairs the first pass left unfinished, computed again with the whole schedule
        self._slots: dict[tuple, _Slot] = {}
        self._pool = None

    def _use_graphs(self, device: torch.device) -> bool:
        return self.graphs if self.graphs is not None else device.type == "cuda"

    @staticmethod
    def _run(solver: TVL1, slot: _Slot) -> tuple:
        flow, stats = solver(slot.i0, slot.i1, return_stats=True, init=slot.init)
        return flow, stats.iterations, stats.unfinished

    def _slot(self, solver: TVL1, bucket: int, h: int, w: int, warm: bool, device: torch.device) -> _Slot:
        if device.type == "cuda" and device.index is None:  # "cuda" and a tensor's "cuda:0" must find one slot
            device = torch.device("cuda", torch.cuda.current_device())
        key = (bucket, h, w, warm, device, solver is self.solver)
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        z = lambda *shape: torch.zeros(shape, dtype=torch.float32, device=device)  # noqa: E731
        with torch.inference_mode(False):  # normal tensors: refilled in place whether or not a later call is in inference mode
            slot = _Slot(z(bucket, h, w), z(bucket, h, w), z(bucket, 2, h, w) if warm else None)
        if self._use_graphs(device):
            t0 = time.perf_counter()
            # warm-up on a side stream (torch.cuda.graphs' recipe): fills the solver's device-side caches (resize
            # matrices: a host copy, not allowed during capture) and lets lazy CUDA initialisation happen outside
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                self._run(solver, slot)
            torch.cuda.current_stream(device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            slot.graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA calls of other threads (a service's decoders, say) do not break this capture
            with torch.cuda.graph(slot.graph, pool=self._pool, capture_error_mode="thread_local"):
                slot.out = self._run(solver, slot)
            torch.cuda.synchronize(device)
            slot.capture_s = time.perf_counter() - t0
            logger.info("TV-L1 CUDA graph captured: batch %d, %dx%d%s%s, %.2f s", bucket, h, w, " (warm)" if warm else "",
                        "" if solver is self.first else " (whole schedule)", slot.capture_s)
        self._slots[key] = slot
        return slot

    def capture(self, height: int, width: int, max_batch: int = BUCKETS[-1], warm: bool = False,
                device: str | torch.device = "cuda") -> float:
        """Capture the first pass's graphs of every bucket up to the one holding `max_batch` at one size (the whole
        schedule's are captured when a pair first needs them); returns the seconds."""
        t0 = time.perf_counter()
        top = bucket_for(max_batch, self.buckets)
        for b in self.buckets:
            if b <= top:
                self._slot(self.first, b, height, width, warm, torch.device(device))
        return time.perf_counter() - t0

    @property
    def captured(self) -> list[tuple]:
        """(bucket, height, width, warm, device, whole schedule) of every graph (or eager slot) made so far."""
        return list(self._slots)

    def _pass(self, solver: TVL1, i0: torch.Tensor, i1: torch.Tensor, init: torch.Tensor | None) -> tuple:
        """One padded replay of <= the largest bucket's pairs: cloned (flow, [iterations per scale], unfinished)."""
        n, h, w = i0.shape
        slot = self._slot(solver, bucket_for(n, self.buckets), h, w, init is not None, i0.device)
        for static, x in [(slot.i0, i0), (slot.i1, i1)] + ([(slot.init, init)] if init is not None else []):
            static[:n].copy_(x)
            static[n:].zero_()  # flat padding pairs: stopped after their first iteration, identical every call
        if slot.graph is not None:
            slot.graph.replay()
            flow, its, unfinished = slot.out
        else:
            flow, its, unfinished = self._run(solver, slot)
        return flow[:n].clone(), [t[:n].clone() for t in its], unfinished[:n].clone()

    @torch.no_grad()
    def __call__(self, i0: torch.Tensor, i1: torch.Tensor, return_stats: bool = False, init: torch.Tensor | None = None):
        """TVL1.__call__'s contract: (B, H, W) (or (H, W)) pairs in [0, 255] -> (B, 2, H, W) flow; `init` warm-starts."""
        i0, i1, init, squeeze = as_batch(i0, i1, init)
        b, h, w = i0.shape
        if init is not None and init.shape != (b, 2, h, w):
            raise ValueError(f"init must be (B, 2, H, W) = {(b, 2, h, w)}, got {tuple(init.shape)}")
        flows, iters, unfinished = [], [], []
        top = self.buckets[-1]
        for start in range(0, b, top):
            part = slice(start, min(b, start + top))
            x0, x1, xi = i0[part], i1[part], None if init is None else init[part]
            flow, its, unf = self._pass(self.first, x0, x1, xi)
            if self.first is not self.solver:
                redo = unf.nonzero().flatten()  # the one host sync of a call
                if redo.numel():
                    f2, its2, unf2 = self._pass(self.solver, x0[redo], x1[redo], None if xi is None else xi[redo])
                    flow[redo] = f2
                    for t, t2 in zip(its, its2):
                        t[redo] = t2
                    unf[redo] = unf2
                    self.recomputed += int(redo.numel())
            flows.append(flow)
            iters.append(its)
            unfinished.append(unf)
        flow = flows[0] if len(flows) == 1 else torch.cat(flows)
        if squeeze:
            flow = flow[0]
        if not return_stats:
            return flow
        sizes = pyramid_sizes(h, w, self.params.nscales, self.params.scale_step)
        return flow, TVL1Stats(sizes=sizes, iterations=[torch.cat(per) for per in zip(*iters)],
                               unfinished=torch.cat(unfinished))


def compile_cache(directory: str | Path | None) -> Path | None:
    """Keep torch.compile's artifacts (inductor's FX-graph cache, triton's kernels) in `directory`, for this process
    and its children, so a later process with the same code and shapes loads them instead of compiling for minutes.
    None leaves torch's default (a per-user temporary directory). Returns the directory used."""
    if directory is None:
        return None
    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)  # triton's cache follows it (<dir>/triton) unless TRITON_CACHE_DIR is set
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True  # the default in recent torch; said explicitly because the reuse relies on it
    return path


__all__ = ["BUCKETS", "GraphedTVL1", "bucket_for", "compile_cache"]
