"""One camera's (or one clip's) stream of scored windows -> one score per frame, each frame scored once (pure).

Windows start every `hop` frames (the bundle's `scoring.hop`), so with hop < window consecutive windows overlap.
A frame takes its evidence from the first window that holds it: the first window of a stream gives all its frames,
every later one the frames that are newer than any scored before (normally its last `hop`). That is the lowest
latency a frame can have and it scores every frame exactly once. The service (`streaming.batching`) and
`vad eval --protocol stream` both push windows through this class, so they cannot disagree.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from offline.scoring.frame_scorer import FrameScorer


class StreamScorer:
    """Per-stream state: the FrameScorer (normaliser) and the newest frame index scored so far."""

    def __init__(self, frame_scorer: FrameScorer):
        self.frame_scorer = frame_scorer
        self.last_index = -1

    def new_frames(self, indices: np.ndarray) -> np.ndarray:
        """Which frames of a window (its (T,) frame indices) are scored now: a (T,) bool mask.

        Indices that go back to or below the last scored one (a restarted feed that counts from 0 again) start a
        new stream: every frame of that window is new.
        """
        idx = np.asarray(indices).reshape(-1)
        if idx.size and idx[-1] <= self.last_index:
            self.last_index = -1
        return idx > self.last_index

    def push(self, indices: np.ndarray, raw: Mapping[str, np.ndarray | None]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Score one window's new frames; returns (mask (T,), normalised components + "score" for the masked
        frames, warm flags for the masked frames). `raw` holds each component's (T,) evidence for the whole window."""
        mask = self.new_frames(indices)
        chunk = {k: None if v is None else np.asarray(v).reshape(-1)[mask] for k, v in raw.items()}
        out, warm = self.frame_scorer.update(chunk)
        if mask.any():
            self.last_index = int(np.asarray(indices).reshape(-1)[mask][-1])
        return mask, out, warm
