"""Damaged media for the fault suite: H.264 with flipped payload bytes, truncated files, a resolution change.

Every file is made here from the demo feed (streaming.demo_feed), so the suite needs no footage in the repo:
- `corrupt_h264(src, dst, ...)`: remux an MP4/MKV, flipping bytes inside the slice NAL units of some packets.
  NAL length prefixes and headers stay intact, so the container parses and the damage reaches the decoder.
- `truncate_file(src, dst, fraction)`: the first `fraction` of the bytes, cut mid-packet.
- `resolution_change_h264(dst, sizes, ...)`: one Annex B H.264 elementary stream whose frame size changes
  (a new SPS) part-way, as a camera does after someone changes its resolution setting.
"""
from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import numpy as np

SLICE_NAL_TYPES = {1, 5}  # coded slice (non-IDR, IDR)


def _avcc_nal_spans(buf: memoryview | bytes, length_size: int = 4) -> list[tuple[int, int, int]]:
    """(start, end, nal_type) of each NAL unit in a length-prefixed (MP4/MKV) H.264 packet."""
    spans = []
    pos = 0
    n = len(buf)
    while pos + length_size <= n:
        size = int.from_bytes(bytes(buf[pos:pos + length_size]), "big")
        start = pos + length_size
        end = start + size
        if size <= 0 or end > n:
            break
        spans.append((start, end, buf[start] & 0x1F))
        pos = end
    return spans


def corrupt_h264(
    src: str | Path,
    dst: str | Path,
    *,
    fraction: float = 0.2,
    flips_per_packet: int = 8,
    skip_first: int = 10,
    seed: int = 0,
) -> dict[str, int]:
    """Copy `src` (H.264 in MP4/MKV) to `dst`, flipping random bytes in the slices of a `fraction` of packets.

    The first `skip_first` packets stay intact so a client can open the stream. Returns counts:
    packets, damaged_packets, flipped_bytes.
    """
    import av

    rng = random.Random(seed)
    counts = {"packets": 0, "damaged_packets": 0, "flipped_bytes": 0}
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        istream = inp.streams.video[0]
        ostream = out.add_stream_from_template(istream)
        for packet in inp.demux(istream):
            if packet.size == 0:  # the demuxer's flush packet
                continue
            counts["packets"] += 1
            if counts["packets"] > skip_first and rng.random() < fraction:
                buf = memoryview(packet)
                slices = [(s, e) for s, e, t in _avcc_nal_spans(buf) if t in SLICE_NAL_TYPES and e - s > 8]
                flipped = 0
                for _ in range(flips_per_packet if slices else 0):
                    s, e = rng.choice(slices)
                    i = rng.randrange(s + 4, e)  # keep the NAL header and the first slice-header bytes
                    buf[i] ^= 0xFF
                    flipped += 1
                if flipped:
                    counts["damaged_packets"] += 1
                    counts["flipped_bytes"] += flipped
            packet.stream = ostream
            out.mux(packet)
    return counts


def truncate_file(src: str | Path, dst: str | Path, fraction: float = 0.5) -> int:
    """Write the first `fraction` of `src`'s bytes to `dst` (a download or a recording cut short); returns bytes."""
    data = Path(src).read_bytes()
    cut = int(len(data) * fraction)
    Path(dst).write_bytes(data[:cut])
    return cut


def resolution_change_h264(
    dst: str | Path,
    sizes: tuple[tuple[int, int], ...] = ((320, 240), (176, 144), (320, 240)),
    seconds_each: float = 2.0,
    fps: int = 25,
    seed: int = 0,
) -> list[int]:
    """An Annex B H.264 stream (`.h264`) whose (width, height) follows `sizes`; returns frames per part."""
    import av

    from streaming.demo_feed import DemoFeed

    dst = Path(dst)
    frames_per_part = []
    start = 0
    with dst.open("wb") as f:
        for width, height in sizes:
            feed = DemoFeed(seed=seed, fps=fps, size=(height, width), anomaly_every_s=None)
            n = int(round(seconds_each * fps))
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height = width, height
            codec.pix_fmt = "yuv420p"
            codec.time_base = Fraction(1, fps)
            codec.framerate = Fraction(fps)
            codec.options = {"preset": "ultrafast", "g": str(fps), "bf": "0"}
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(feed.frame(start + i), format="rgb24")
                frame.pts = i
                for packet in codec.encode(frame):
                    f.write(bytes(packet))
            for packet in codec.encode(None):
                f.write(bytes(packet))
            frames_per_part.append(n)
            start += n
    return frames_per_part


def frame_shapes(path: str | Path) -> list[tuple[int, int]]:
    """(height, width) of every decodable frame of a file (the reference for resolution-change checks)."""
    import av

    shapes = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            shapes.append((frame.height, frame.width))
    return shapes


def demo_frames(n: int, size: tuple[int, int] = (240, 320), seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 demo-feed frames (small synthetic input for tests)."""
    from streaming.demo_feed import DemoFeed

    feed = DemoFeed(seed=seed, fps=25, size=size, anomaly_every_s=None)
    return np.stack([feed.frame(i) for i in range(n)])
