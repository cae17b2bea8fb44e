"""Exponential backoff with jitter for reconnecting to cameras (pure: no I/O, no clock)."""
from __future__ import annotations

import random


class Backoff:
    """Delays initial_s, initial_s*factor, ... capped at max_s, each scaled by a random factor in [1-jitter, 1+jitter].

    The jitter spreads the reconnects of many cameras that lost the same server at the same moment.
    `reset()` after a successful connection starts the sequence again.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ):
        if not initial_s > 0:
            raise ValueError(f"Backoff initial_s must be > 0, got {initial_s}")
        if not max_s >= initial_s:
            raise ValueError(f"Backoff max_s must be >= initial_s ({initial_s}), got {max_s}")
        if not factor >= 1:
            raise ValueError(f"Backoff factor must be >= 1, got {factor}")
        if not 0 <= jitter < 1:
            raise ValueError(f"Backoff jitter must be in [0, 1), got {jitter}")
        self.initial_s = float(initial_s)
        self.max_s = float(max_s)
        self.factor = float(factor)
        self.jitter = float(jitter)
        self.rng = rng if rng is not None else random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt, in seconds; never above max_s * (1 + jitter)."""
        base = min(self.max_s, self.initial_s * self.factor ** min(self.attempt, 64))  # 64: no float overflow
        self.attempt += 1
        return base * (1.0 + self.jitter * (2.0 * self.rng.random() - 1.0))

    def reset(self) -> None:
        """Start again from the initial delay (after a successful connection)."""
        self.attempt = 0
