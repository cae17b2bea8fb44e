"""An alert's footage in memory: the frames of the windows it covers, bounded, the newest kept (pure numpy).

`ClipBuffer.add(frame, active)` is fed every scored frame of one camera. While `active` (the camera's alert is pending
or open) frames are kept, up to `max_frames` (the oldest dropped first); the `pre_frames` frames scored just before
the alert went pending are kept too, so the first alerted frame comes with the window that scored it (and a clip is
at least one training window long). `take()` hands the kept frames over when the alert closes; an alert that never
opened (pending, then low again) drops its frames. The frames are the scorer's, at the model's input size: see
streaming/event_clips.py for why that size.
"""
from __future__ import annotations

from collections import deque

import numpy as np


class ClipBuffer:
    """Bounded frames of one camera's current alert (see the module docstring).

    Args:
        max_frames: most frames kept per alert, pre-roll included (the newest kept); >= 1.
        pre_frames: frames kept from before the alert (a window's context), >= 0.
    """

    def __init__(self, max_frames: int, pre_frames: int = 15):
        if max_frames < 1:
            raise ValueError(f"clip max_frames must be >= 1, got {max_frames}")
        if pre_frames < 0:
            raise ValueError(f"clip pre_frames must be >= 0, got {pre_frames}")
        self.max_frames, self.pre_frames = int(max_frames), int(pre_frames)
        self._kept: deque[np.ndarray] = deque(maxlen=self.max_frames)
        self._recent: deque[np.ndarray] = deque(maxlen=self.pre_frames)  # maxlen 0 keeps nothing
        self.active = False
        self.dropped = 0  # frames of the current alert dropped by the bound

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, frame: np.ndarray, active: bool) -> None:
        """One scored frame (H, W, 3) uint8 (copied); `active`: the camera's alert is pending or open at it."""
        frame = np.array(frame, dtype=np.uint8, copy=True)
        if active:
            if not self.active:
                self._kept.extend(self._recent)
                self._recent.clear()
                self.active = True
            if len(self._kept) == self.max_frames:
                self.dropped += 1
            self._kept.append(frame)
            return
        if self.active:  # low again before opening: nothing to keep; its newest frames are the next pre-roll
            self._restart_pre_roll()
        self._recent.append(frame)

    def take(self) -> np.ndarray | None:
        """The kept frames (N, H, W, 3) uint8, oldest first, and start over; None when nothing was kept. Frames of
        another size than the newest (the camera changed bundle mid-alert) are left out."""
        frames = list(self._kept)
        self._kept.clear()
        self._recent.clear()
        self.active, self.dropped = False, 0
        if not frames:
            return None
        shape = frames[-1].shape
        return np.stack([f for f in frames if f.shape == shape])

    def _restart_pre_roll(self) -> None:
        self._recent.clear()
        self._recent.extend(self._kept)  # the deque's bound keeps the newest pre_frames
        self._kept.clear()
        self.active, self.dropped = False, 0
