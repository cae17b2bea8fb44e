"""The built-in demo feed: a deterministic synthetic fixed-camera scene with anomalies at known times.

A textured background (pavement and grass), a few "pedestrians" walking across at steady slow speeds
(normal), and, during the anomalous intervals, a large "vehicle" crossing fast (anomalous: a spatial and a
temporal anomaly at once). `DemoFeed.frame(i)` depends only on (seed, fps, size, intervals, i), so the feed, the
videos written from it and the demo model bundle trained on its normal part are reproducible.
Pure numpy; PyAV is imported only inside `write_demo_video`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NOISE_FIELDS = 8  # sensor noise: a few precomputed fields cycled by frame index (cheap, deterministic)


@dataclass(frozen=True)
class Walker:
    """A pedestrian on a horizontal lane: position x(t) = x0 + speed * t (pixels, wraps around)."""

    x0: float
    y: float
    speed: float  # pixels per second, signed
    width: int
    height: int
    colour: tuple[int, int, int]


class DemoFeed:
    """Synthetic fixed-camera scene; frames are (H, W, 3) uint8 RGB.

    Args:
        seed: everything random (texture, walkers, noise) comes from it.
        fps: frames per second; motion is defined in pixels per second, so speeds do not depend on it.
        size: frame size, int (square) or (height, width).
        anomaly_every_s: a vehicle crossing starts every this many seconds (first at anomaly_every_s, so the
            first interval is normal). Ignored when `anomaly_intervals` is given. None or 0: no anomalies.
        anomaly_intervals: explicit (start_s, end_s) intervals; the vehicle enters at start and has left at end.
        crossing_s: duration of one crossing when `anomaly_every_s` is used.
        walkers: number of pedestrians.
        noise: standard deviation of the sensor noise, in gray levels.
    """

    def __init__(
        self,
        seed: int = 0,
        fps: float = 25.0,
        size: int | tuple[int, int] = 256,
        anomaly_every_s: float | None = 20.0,
        anomaly_intervals: list[tuple[float, float]] | None = None,
        crossing_s: float = 1.6,
        walkers: int = 4,
        noise: float = 2.0,
    ):
        if not fps > 0:
            raise ValueError(f"DemoFeed fps must be > 0, got {fps}")
        self.height, self.width = (size, size) if isinstance(size, int) else size
        if self.height < 32 or self.width < 32:
            raise ValueError(f"DemoFeed size must be at least 32x32, got {size}")
        if anomaly_intervals is not None:
            for start, end in anomaly_intervals:
                if not 0 <= start < end:
                    raise ValueError(f"DemoFeed anomaly_intervals: want 0 <= start < end, got ({start}, {end})")
        elif anomaly_every_s is not None and anomaly_every_s < 0:
            raise ValueError(f"DemoFeed anomaly_every_s must be >= 0, got {anomaly_every_s}")
        if anomaly_every_s and anomaly_every_s <= crossing_s and anomaly_intervals is None:
            raise ValueError(f"DemoFeed anomaly_every_s ({anomaly_every_s}) must exceed crossing_s ({crossing_s})")
        self.seed = int(seed)
        self.fps = float(fps)
        self.anomaly_every_s = anomaly_every_s or None
        self.anomaly_intervals = sorted(anomaly_intervals) if anomaly_intervals is not None else None
        self.crossing_s = float(crossing_s)
        rng = np.random.default_rng(self.seed)
        self._background = _background(rng, self.height, self.width)
        self._walkers = _walkers(rng, walkers, self.height, self.width)
        self._noise = (rng.standard_normal((NOISE_FIELDS, self.height, self.width, 1)) * noise).astype(np.float32)
        # the vehicle: a wide dark-red box with windows, on the lower lane
        self._veh_w = max(8, int(0.32 * self.width))
        self._veh_h = max(6, int(0.17 * self.height))
        self._veh_y = int(0.62 * self.height)

    # ------------------------------------------------------------------------------------------ timeline
    def interval_at(self, t: float) -> tuple[float, float] | None:
        """The anomalous (start_s, end_s) interval containing time t, if any."""
        if self.anomaly_intervals is not None:
            for start, end in self.anomaly_intervals:
                if start <= t < end:
                    return start, end
            return None
        if not self.anomaly_every_s:
            return None
        k = int(t // self.anomaly_every_s)
        start = k * self.anomaly_every_s
        if k >= 1 and t < start + self.crossing_s:
            return start, start + self.crossing_s
        return None

    def _vehicle_x(self, i: int) -> int | None:
        """Left edge of the vehicle in frame i, or None when no crossing is under way."""
        t = i / self.fps
        interval = self.interval_at(t)
        if interval is None:
            return None
        start, end = interval
        progress = (t - start) / (end - start)  # 0: just left of the frame, 1: just right of it
        return int(round(-self._veh_w + progress * (self.width + self._veh_w)))

    def is_anomalous(self, i: int) -> bool:
        """True when the vehicle is visible in frame i (the ground-truth label)."""
        x = self._vehicle_x(i)
        return x is not None and x + self._veh_w > 0 and x < self.width

    def labels(self, num_frames: int) -> np.ndarray:
        """(num_frames,) uint8 ground truth for frames 0..num_frames-1."""
        return np.fromiter((self.is_anomalous(i) for i in range(num_frames)), dtype=np.uint8, count=num_frames)

    # ------------------------------------------------------------------------------------------- render
    def frame(self, i: int) -> np.ndarray:
        """Frame i as (H, W, 3) uint8 RGB."""
        if i < 0:
            raise ValueError(f"DemoFeed.frame index must be >= 0, got {i}")
        t = i / self.fps
        img = self._background.copy()
        for k, w in enumerate(self._walkers):
            span = self.width + w.width
            x = int((w.x0 + w.speed * t) % span) - w.width
            bob = int(round(1.0 * np.sin(2 * np.pi * 1.6 * t + k)))  # steps: a little vertical bounce
            _draw_walker(img, x, int(w.y) + bob, w, phase=2 * np.pi * 1.6 * t + k)
        vx = self._vehicle_x(i)
        if vx is not None:
            _draw_vehicle(img, vx, self._veh_y, self._veh_w, self._veh_h)
        out = img.astype(np.float32) + self._noise[i % NOISE_FIELDS]
        return np.clip(out, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grass with a paved walkway band, low-frequency texture and a fine grain."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = np.zeros((h, w), np.float32)
    for _ in range(6):  # a few random plane waves give a smooth, non-repeating texture
        fx, fy = rng.uniform(-6, 6, size=2) * 2 * np.pi
        tex += rng.uniform(4, 10) * np.sin(fx * xx / w + fy * yy / h + rng.uniform(0, 2 * np.pi))
    grain = rng.normal(0, 6, size=(h, w)).astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[...] = np.array([70, 120, 60], np.float32)  # grass
    walkway = (yy > 0.30 * h) & (yy < 0.90 * h)
    img[walkway] = np.array([150, 145, 135], np.float32)  # pavement
    slabs = walkway & ((xx.astype(int) % max(4, w // 8)) == 0)  # slab joints
    img[slabs] -= 35
    img += (tex + grain)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _walkers(rng: np.random.Generator, n: int, h: int, w: int) -> list[Walker]:
    lanes = np.linspace(0.34 * h, 0.80 * h, max(n, 1))
    out = []
    for k in range(n):
        ww = max(3, int(0.035 * w))
        hh = max(8, int(0.11 * h))
        speed = rng.uniform(0.06, 0.12) * w * (1 if k % 2 == 0 else -1)  # ~15-30 px/s at 256: a slow walk
        colour = tuple(int(c) for c in rng.integers(20, 235, size=3))
        out.append(Walker(rng.uniform(0, w), float(lanes[k] - hh), float(speed), ww, hh, colour))
    return out


def _fill(img: np.ndarray, y0: int, y1: int, x0: int, x1: int, colour) -> None:
    h, w = img.shape[:2]
    y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if y0 < y1 and x0 < x1:
        img[y0:y1, x0:x1] = colour


def _draw_walker(img: np.ndarray, x: int, y: int, w: Walker, phase: float) -> None:
    """Head, body and two legs that swing with the gait phase."""
    head = max(2, w.width - 1)
    _fill(img, y, y + head, x, x + head, (225, 190, 160))
    body_top, body_bot = y + head, y + int(0.65 * w.height)
    _fill(img, body_top, body_bot, x - 1, x + w.width, w.colour)
    swing = int(round(1.5 * np.sin(phase)))
    leg_w = max(1, w.width // 2)
    _fill(img, body_bot, y + w.height, x + swing, x + swing + leg_w, (40, 40, 60))
    _fill(img, body_bot, y + w.height, x + w.width - leg_w - swing, x + w.width - swing, (40, 40, 60))


def _draw_vehicle(img: np.ndarray, x: int, y: int, vw: int, vh: int) -> None:
    _fill(img, y, y + vh, x, x + vw, (150, 20, 25))
    _fill(img, y + vh // 6, y + vh // 2, x + vw // 8, x + vw // 2 - 2, (170, 210, 235))  # windows
    _fill(img, y + vh // 6, y + vh // 2, x + vw // 2 + 2, x + 7 * vw // 8, (170, 210, 235))
    wheel = max(2, vh // 4)
    _fill(img, y + vh - wheel // 2, y + vh + wheel // 2, x + vw // 6, x + vw // 6 + wheel, (15, 15, 15))
    _fill(img, y + vh - wheel // 2, y + vh + wheel // 2, x + 5 * vw // 6 - wheel, x + 5 * vw // 6, (15, 15, 15))


def write_demo_video(
    path: str | Path,
    seconds: float,
    fps: float = 25.0,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    anomaly_every_s: float | None = 20.0,
    anomaly_intervals: list[tuple[float, float]] | None = None,
    crf: int = 18,
    keyframe_s: float = 1.0,
    start_frame: int = 0,
) -> np.ndarray:
    """Encode `seconds` of the demo feed (from `start_frame`) to an H.264 file; returns the (N,) uint8 labels.

    A keyframe every `keyframe_s` lets an RTSP client join mid-stream. MP4/MKV by the path's suffix.
    """
    import av  # lazy: the feed itself is pure numpy

    feed = DemoFeed(seed=seed, fps=fps, size=size, anomaly_every_s=anomaly_every_s, anomaly_intervals=anomaly_intervals)
    n = int(round(seconds * fps))
    if n < 1:
        raise ValueError(f"write_demo_video: seconds * fps must give at least one frame, got {seconds} * {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "libx264",
            rate=rate,
            options={"crf": str(crf), "preset": "veryfast", "g": str(max(1, int(round(keyframe_s * fps)))), "bf": "0"},
        )
        stream.width, stream.height = feed.width, feed.height
        stream.pix_fmt = "yuv420p"
        for i in range(start_frame, start_frame + n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(feed.frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return feed.labels(start_frame + n)[start_frame:]
