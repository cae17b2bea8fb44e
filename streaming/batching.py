"""The batching core of the scorer (no Ray): queue windows from many cameras, score them in one Detector call.

Drop policy (stated, counted): each camera may have at most `max_pending` windows waiting; a newer window
evicts that camera's oldest one, so a slow scorer drops whole, stale windows and always scores the freshest
footage, and one busy camera cannot starve the others (batches are filled round-robin, oldest first).
A batch is released when it holds `max_batch` windows or when its oldest window has waited `max_wait_s`.
Cameras scored by different models (streaming.bundle_set) never share a batch: `take(group=...)` fills a batch from
the cameras of one group (one bundle), the group whose oldest window has waited longest among those ready.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from offline.data.pixels import to_model_range
from offline.scoring.frame_scorer import FrameScorer
from offline.scoring.stream import StreamScorer


class WindowLike(Protocol):
    """What the ring buffer produces (streaming.ring_buffer.CameraWindow)."""

    camera: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    indices: np.ndarray  # (T,)
    wall_s: np.ndarray  # (T,)


@dataclass
class _Pending:
    window: Any
    arrived_s: float


class PendingWindows:
    """Thread-safe per-camera window queue with drop-oldest eviction and batch release (see module docstring)."""

    def __init__(self, max_pending: int = 2, clock: Callable[[], float] = time.monotonic):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self.clock = clock
        self._queues: OrderedDict[str, deque[_Pending]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped: dict[str, int] = {}

    def put(self, window: WindowLike) -> Any | None:
        """Queue a window without ever blocking; returns the evicted (dropped) window of that camera, if any."""
        with self._cond:
            q = self._queues.setdefault(window.camera, deque())
            evicted = None
            if len(q) >= self.max_pending:
                evicted = q.popleft().window
                self.dropped[window.camera] = self.dropped.get(window.camera, 0) + 1
            q.append(_Pending(window, self.clock()))
            self._cond.notify_all()
            return evicted

    def depth(self, camera: str | None = None) -> int:
        """Windows queued for `camera`, or for all cameras."""
        with self._cond:
            if camera is not None:
                return len(self._queues.get(camera, ()))
            return sum(len(q) for q in self._queues.values())

    def discard(self, camera: str) -> int:
        """Forget a removed camera's queued windows (not counted as drops); returns how many."""
        with self._cond:
            q = self._queues.pop(camera, deque())
            return len(q)

    def close(self) -> None:
        """Wake every waiting `take` with an empty batch (the scorer is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _groups(self, group: Callable[[str], Hashable] | None) -> dict[Hashable, tuple[float, int, set[str]]]:
        """Per group of cameras with queued windows: (arrival of its oldest window, windows queued, its cameras)."""
        out: dict[Hashable, tuple[float, int, set[str]]] = {}
        for cam, q in self._queues.items():
            if not q:
                continue
            key = None if group is None else group(cam)
            oldest, count, cams = out.get(key, (q[0].arrived_s, 0, set()))
            out[key] = (min(oldest, q[0].arrived_s), count + len(q), cams | {cam})
        return out

    def _pop_round_robin(self, n: int, cameras: set[str]) -> list[Any]:
        out: list[Any] = []
        while len(out) < n:
            ready = [(q[0].arrived_s, cam) for cam, q in self._queues.items() if q and cam in cameras]
            if not ready:
                break
            # One window per camera per round, oldest heads first, so no camera starves the others.
            for _, cam in sorted(ready):
                if len(out) >= n:
                    break
                out.append(self._queues[cam].popleft().window)
        return out

    def take(
        self,
        max_batch: int,
        max_wait_s: float,
        timeout_s: float | None = None,
        group: Callable[[str], Hashable] | None = None,
    ) -> list[Any]:
        """Block until a batch is ready: `max_batch` windows, or the oldest has waited `max_wait_s`.

        With `group` (camera name -> key, e.g. the bundle that scores it) a batch holds the windows of one group
        only, and readiness is judged per group; the ready group with the oldest window goes first.
        Returns [] when `timeout_s` passes with nothing queued, or after close().
        """
        deadline = None if timeout_s is None else self.clock() + timeout_s
        with self._cond:
            while True:
                if self._closed:
                    return []
                groups = self._groups(group)
                now = self.clock()
                if groups:
                    ready = [(oldest, cams) for oldest, count, cams in groups.values()
                             if count >= max_batch or now >= oldest + max_wait_s]
                    if ready:
                        return self._pop_round_robin(max_batch, min(ready, key=lambda r: r[0])[1])
                    wait = min(oldest for oldest, _, _ in groups.values()) + max_wait_s - now
                else:
                    if deadline is not None and now >= deadline:
                        return []
                    wait = None if deadline is None else deadline - now
                self._cond.wait(timeout=wait)


def to_model_input(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """List of (T, H, W, 3) uint8 windows -> (B, 3, T, H, W) float32 in [-1, 1], the Detector's input."""
    return to_model_range(np.stack([np.asarray(f) for f in frames]))  # (B, T, H, W, 3) uint8 -> (B, 3, T, H, W)


@dataclass
class ScoredWindow:
    """One camera's window after scoring, reduced to the frames it scored (all of a stream's first window, then the
    newest `hop`: offline.scoring.stream): per-frame scores, warm-up flags and the raw evidence of those frames."""

    camera: str
    indices: np.ndarray  # (T,)
    wall_s: np.ndarray  # (T,) wall-clock time each frame was decoded
    score: np.ndarray  # (T,) normalised aggregate score in (0, 1)
    warm: np.ndarray  # (T,) False while the camera's running normaliser warms up
    raw: dict[str, np.ndarray | None]
    error_map: np.ndarray | None  # (T, H, W) reconstruction error of the spatial AE, when asked for
    frames: np.ndarray = field(repr=False)  # (T, H, W, 3) uint8, for snapshots
    scored_wall_s: float = 0.0


class BatchScorer:
    """Scores windows from many cameras in batches of at most `max_batch` through one Detector.

    Args:
        detector: offline.detector.Detector (its `score` is the one scoring path).
        make_frame_scorer: builds a fresh per-camera FrameScorer (the bundle's normaliser and calibration).
        max_batch: windows per Detector call.
        return_maps: ask the Detector for per-frame error maps (needed for event snapshots).
    """

    def __init__(
        self,
        detector: Any,
        make_frame_scorer: Callable[[], FrameScorer],
        max_batch: int = 16,
        return_maps: bool = True,
    ):
        self.detector = detector
        self.make_frame_scorer = make_frame_scorer
        self.max_batch = max_batch
        self.return_maps = return_maps
        self._scorers: dict[str, StreamScorer] = {}

    def forget(self, camera: str) -> None:
        """Drop a camera's running statistics (removed camera, or a restart of its feed)."""
        self._scorers.pop(camera, None)

    def score_raw(self, windows: Sequence[WindowLike]) -> list[tuple[dict[str, np.ndarray | None], np.ndarray | None]]:
        """Detector evidence per window, in order: [(raw components, error map (T, H, W) or None)]."""
        out: list[tuple[dict[str, np.ndarray | None], np.ndarray | None]] = []
        for start in range(0, len(windows), self.max_batch):
            chunk = windows[start : start + self.max_batch]
            with torch.inference_mode():
                scores = self.detector.score(to_model_input([w.frames for w in chunk]), return_maps=self.return_maps)
            for i in range(len(chunk)):
                maps = None if scores.error_map is None else np.asarray(scores.error_map[i])
                out.append((scores.raw(i), maps))
        return out

    def score(self, windows: Sequence[WindowLike]) -> list[ScoredWindow]:
        """Score a batch, then each window's new frames with its camera's StreamScorer (in arrival order)."""
        results: list[ScoredWindow] = []
        now = time.time()
        for w, (raw, maps) in zip(windows, self.score_raw(windows)):
            ss = self._scorers.get(w.camera)
            if ss is None:
                ss = self._scorers[w.camera] = StreamScorer(self.make_frame_scorer())
            mask, norm, warm = ss.push(w.indices, raw)
            results.append(
                ScoredWindow(
                    camera=w.camera,
                    indices=np.asarray(w.indices)[mask],
                    wall_s=np.asarray(w.wall_s, dtype=np.float64)[mask],
                    score=np.asarray(norm["score"], dtype=np.float64),
                    warm=np.asarray(warm, dtype=bool),
                    raw={k: None if v is None else np.asarray(v)[mask] for k, v in raw.items()},
                    error_map=None if maps is None else maps[mask],
                    frames=w.frames[mask],
                    scored_wall_s=now,
                )
            )
        return results


def frame_scorer_factory(detector: Any) -> Callable[[], FrameScorer]:
    """Per-camera FrameScorers from the detector's bundle: its weights, normaliser and calibration."""
    return lambda: detector.frame_scorer()
