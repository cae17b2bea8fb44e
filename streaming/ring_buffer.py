"""Per-camera frame shaping before scoring: frame-rate resampling and the 16-frame ring buffer.

Pure numpy. Frames are resized by `offline.readers.decode.resize`, the same function the dataset readers use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraWindow:
    """One window of consecutive analysed frames of one camera.

    frames: (T, H, W, 3) uint8 RGB; indices: (T,) int64 frame numbers since the camera started;
    wall_s: (T,) float64 wall-clock decode times (seconds since the epoch).
    """

    camera: str
    frames: np.ndarray
    indices: np.ndarray
    wall_s: np.ndarray


class RingBuffer:
    """Collects frames into windows of `window` frames, one every `hop` frames (hop == window: no overlap).

    Frames are copied into a preallocated (window, H, W, 3) ring; `push` returns a fresh `CameraWindow` (its own
    copy, safe to hand to another thread) when one is complete, else None. A frame of another size resets
    the ring (a camera that changed resolution starts a new window).
    """

    def __init__(self, window: int = 16, hop: int = 16, camera: str = ""):
        if window < 1:
            raise ValueError(f"RingBuffer window must be >= 1, got {window}")
        if not 1 <= hop:
            raise ValueError(f"RingBuffer hop must be >= 1, got {hop}")
        self.window = int(window)
        self.hop = int(hop)
        self.camera = camera
        self._frames: np.ndarray | None = None
        self._indices = np.zeros(self.window, dtype=np.int64)
        self._wall = np.zeros(self.window, dtype=np.float64)
        self._count = 0  # frames pushed since the last reset
        self._since_emit = 0  # frames pushed since the last window was emitted

    def __len__(self) -> int:
        """Frames currently held (at most `window`)."""
        return min(self._count, self.window)

    def reset(self) -> None:
        """Forget the held frames (after a reconnect: a window must not span a gap in the stream)."""
        self._count = 0
        self._since_emit = 0

    def push(self, frame: np.ndarray, frame_index: int, wall_s: float) -> CameraWindow | None:
        """Add one (H, W, 3) uint8 frame; returns the completed CameraWindow or None."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"RingBuffer.push expects an (H, W, 3) uint8 frame, got shape {frame.shape} dtype {frame.dtype}"
            )
        if self._frames is None or self._frames.shape[1:] != frame.shape:
            self._frames = np.empty((self.window, *frame.shape), dtype=np.uint8)
            self.reset()
        slot = self._count % self.window
        self._frames[slot] = frame
        self._indices[slot] = frame_index
        self._wall[slot] = wall_s
        self._count += 1
        self._since_emit += 1
        if self._count < self.window:
            return None
        first_window = self._count == self.window
        if not first_window and self._since_emit < self.hop:
            return None
        self._since_emit = 0
        order = (np.arange(self.window) + self._count) % self.window  # oldest first
        return CameraWindow(
            camera=self.camera,
            frames=self._frames[order],  # fancy indexing copies
            indices=self._indices[order].copy(),
            wall_s=self._wall[order].copy(),
        )


class FrameResampler:
    """Keeps frames so that the kept ones arrive at about `target_fps` (by the source timestamps); drops the rest.

    A source slower than the target keeps every frame (no duplication). Timestamps that jump backwards or
    far forwards (a reconnect, a new file loop) restart the schedule. `target_fps=None` keeps everything.
    """

    def __init__(self, target_fps: float | None):
        if target_fps is not None and not target_fps > 0:
            raise ValueError(f"FrameResampler target_fps must be > 0, got {target_fps}")
        self.target_fps = target_fps
        self.period = 1.0 / target_fps if target_fps else 0.0
        self._next: float | None = None
        self._last: float | None = None

    def reset(self) -> None:
        """Start again (after a reconnect, stream time restarts)."""
        self._next = None
        self._last = None

    def keep(self, pts_s: float) -> bool:
        """True if the frame at source time `pts_s` (seconds) is kept."""
        if self.target_fps is None:
            return True
        if (
            self._next is None
            or self._last is None
            or pts_s < self._last
            or pts_s > self._next + 1.0 + self.period
        ):
            self._next = pts_s
        self._last = pts_s
        # a fifth of a period of slack: a 25 fps source with jittery timestamps keeps all its frames at 25
        if pts_s + 0.2 * self.period >= self._next:
            self._next += self.period
            if self._next <= pts_s:  # fell behind (gap in the source): do not burst to catch up
                self._next = pts_s + self.period
            return True
        return False
