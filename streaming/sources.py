"""Stream sources: open a camera (RTSP/RTSPS with PyAV), a file (PyAV) or the demo feed, and decode RGB frames.

`open_stream(url, ...)` -> `Stream`: an iterable of `DecodedFrame` with open and read timeouts that fire. Every
failure is a `StreamError` subclass (a `ConnectionError`) with the URL scrubbed, or `StreamURLError` (a
`ValueError`) when retrying cannot help. No Ray; PyAV is imported when a PyAV stream is opened.

PyAV timeout traps, checked against a real GStreamer RTSP server and a server that accepts then stalls
(tests/streaming/test_ingest.py):
- An open that stalls ends after `open_timeout_s` but PyAV reports `InvalidDataError`, not a timeout
  (PyAV issue 584 was the open hanging forever); we classify by elapsed time. A server that completes the
  RTSP handshake and then sends no media "opens" after the timeout with a 0x0 stream: also a timeout.
- FFmpeg's own socket timeout (the rtsp `timeout` option, microseconds) cuts any longer PyAV open timeout short
  (issues 1155, 1243: "timeout capped at 20 s / 5 s"); we set it to the larger of the two timeouts so PyAV's
  interrupt callback decides.
- On a stalled RTSP/TCP stream, the first read interrupt makes the demuxer return one stale packet instead of
  an error, so PyAV alone raises only after twice the read timeout; we treat a gap >= `read_timeout_s` between
  packets as the stall.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import numpy as np

from streaming.credentials import LIVE_SCHEMES, scrub_url
from streaming.inputs import DemoParams

logger = logging.getLogger(__name__)

TRANSPORTS = ("tcp", "udp")
MAX_CONSECUTIVE_CORRUPT = 50  # undecodable packets in a row before the stream counts as broken


# ---------------------------------------------------------------------------------------------------- errors
class StreamError(ConnectionError):
    """A stream could not be opened or stopped delivering; `url` is already scrubbed."""

    def __init__(self, url: str, reason: str):
        self.url = scrub_url(url)
        self.reason = scrub_url(reason)
        super().__init__(f"{self.url}: {self.reason}")


class StreamOpenError(StreamError):
    """Connection refused, name not resolved, no video stream, unreadable file..."""


class StreamTimeoutError(StreamError):
    """The open or a read took longer than its timeout (a stalled camera)."""


class StreamEndedError(StreamError):
    """A live stream ended (the server closed the connection)."""


class StreamDecodeError(StreamError):
    """Too many undecodable packets in a row."""


class StreamURLError(ValueError):
    """The URL itself is unusable (unknown scheme, bad demo parameters): retrying will not help."""


# ---------------------------------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: index counts from 0 per opened stream; pts_s is stream time; wall_s is time.time()."""

    index: int
    pts_s: float
    wall_s: float
    rgb: np.ndarray  # (H, W, 3) uint8
    decode_s: float = 0.0  # time spent decoding and converting this frame (not waiting for data)


class Stream:
    """An opened source; iterate for `DecodedFrame`s. Use as a context manager (closes the container)."""

    url: str  # scrubbed
    fps: float | None  # nominal frame rate, when known
    live: bool
    corrupt_frames: int

    def __init__(self, url: str, fps: float | None, live: bool):
        self.url = scrub_url(url)
        self.fps = fps
        self.live = live
        self.corrupt_frames = 0
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[DecodedFrame]:
        raise NotImplementedError

    def close(self) -> None:
        """Ends the iteration at the next frame boundary; safe to call from another thread."""
        self._closed.set()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PyAVStream(Stream):
    """RTSP(S) or file decoded with PyAV; files may be paced at their frame rate (`realtime`)."""

    def __init__(self, url: str, target: str, *, live: bool, transport: str, open_timeout_s: float,
                 read_timeout_s: float, realtime: bool):
        import av  # lazy: the module stays importable without PyAV for the pure parts

        self._av = av
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.realtime = realtime
        options: dict[str, str] = {}
        if live:
            options = {
                "rtsp_transport": transport,
                # FFmpeg's socket I/O timeout (us) must not undercut PyAV's open timeout (issues 1155, 1243)
                "timeout": str(int(max(open_timeout_s, read_timeout_s) * 1e6)),
                # short probing: the open takes ~0.6 s instead of ~2.8 s (INFRA.md). Not `fflags=nobuffer`:
                # over RTSP/TCP it corrupted the decoded pictures (26 dB against the served clip, see tests)
                "analyzeduration": "500000",
                "probesize": "200000",
            }
        started = time.monotonic()
        try:
            self._container = av.open(target, options=options, timeout=(open_timeout_s, read_timeout_s))
        except Exception as e:  # noqa: BLE001 - every PyAV/OS failure becomes a StreamError naming the URL
            elapsed = time.monotonic() - started
            if live and elapsed >= 0.9 * open_timeout_s:
                raise StreamTimeoutError(url, f"open timed out after {elapsed:.1f}s (open_timeout_s={open_timeout_s})") from None
            raise StreamOpenError(url, f"cannot open: {describe_error(e)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise StreamOpenError(url, "no video stream")
        self._vstream = self._container.streams.video[0]
        elapsed = time.monotonic() - started
        if live and self._vstream.codec_context.width == 0 and elapsed >= 0.9 * open_timeout_s:
            # the server answered the RTSP handshake but sent no media until the open timeout (issue 584's
            # camera); PyAV then "opens" a stream of unknown size. A slow keyframe alone returns earlier.
            self._container.close()
            raise StreamTimeoutError(url, f"no media within the open timeout ({elapsed:.1f}s, open_timeout_s={open_timeout_s})")
        if not live:  # frame threading adds a few frames of latency: only for files, where throughput matters
            self._vstream.thread_type = "AUTO"
        rate = self._vstream.average_rate or self._vstream.guessed_rate
        super().__init__(url, float(rate) if rate else None, live)

    def __iter__(self) -> Iterator[DecodedFrame]:
        av = self._av
        index = 0
        consecutive_corrupt = 0
        t0_wall: float | None = None
        t0_pts: float | None = None
        try:
            packets = self._container.demux(self._vstream)
            while not self._closed.is_set():
                waiting_since = time.monotonic()  # only the time blocked in the demuxer counts as a stall
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.EOFError:
                    break
                except Exception as e:  # noqa: BLE001
                    gap = time.monotonic() - waiting_since
                    if self.live and gap >= 0.9 * self.read_timeout_s:
                        raise StreamTimeoutError(self.url, f"no data for {gap:.1f}s (read_timeout_s={self.read_timeout_s})") from None
                    raise StreamEndedError(self.url, f"read failed: {describe_error(e)}") from None
                gap = time.monotonic() - waiting_since
                if self.live and gap >= self.read_timeout_s:
                    # the stale packet FFmpeg returns after the first interrupt: the stream has stalled
                    raise StreamTimeoutError(self.url, f"no data for {gap:.1f}s (read_timeout_s={self.read_timeout_s})")
                t_decode = time.perf_counter()
                try:
                    frames = packet.decode()
                except av.error.EOFError:
                    break
                except (av.error.InvalidDataError, av.error.FFmpegError) as e:
                    self.corrupt_frames += 1
                    consecutive_corrupt += 1
                    logger.debug("%s: undecodable packet: %s", self.url, describe_error(e))
                    if consecutive_corrupt >= MAX_CONSECUTIVE_CORRUPT:
                        raise StreamDecodeError(self.url, f"{consecutive_corrupt} undecodable packets in a row") from None
                    continue
                for frame in frames:
                    if getattr(frame, "is_corrupt", False):
                        self.corrupt_frames += 1
                        consecutive_corrupt += 1
                        continue
                    consecutive_corrupt = 0
                    pts_s = float(frame.time) if frame.time is not None else index / (self.fps or 25.0)
                    rgb = frame.to_ndarray(format="rgb24")
                    decode_s = time.perf_counter() - t_decode
                    if self.realtime:
                        if t0_wall is None:
                            t0_wall, t0_pts = time.monotonic(), pts_s
                        delay = (pts_s - t0_pts) - (time.monotonic() - t0_wall)
                        if delay > 0 and self._closed.wait(delay):
                            return
                    yield DecodedFrame(index, pts_s, time.time(), rgb, decode_s)
                    index += 1
                    t_decode = time.perf_counter()
            if self.live and not self._closed.is_set():
                raise StreamEndedError(self.url, "the server ended the stream")
        finally:
            self._close_container()

    def _close_container(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may itself fail; nothing to do
            pass

    def __exit__(self, *exc) -> None:
        self.close()
        self._close_container()


class DemoStream(Stream):
    """The built-in demo feed (`demo://name?seed=0&fps=25&size=256&anomaly_every_s=20`), paced in real time."""

    def __init__(self, url: str, realtime: bool = True):
        from streaming.demo_feed import DemoFeed

        try:
            p = DemoParams.from_url(url)
        except ValueError as e:
            raise StreamURLError(f"{scrub_url(url)}: {e}") from None
        self.start_frame, loop_s, fps = p.start, p.loop_s, p.fps
        self.feed = DemoFeed(seed=p.seed, fps=fps, size=p.size, anomaly_every_s=p.anomaly_every_s or None)
        self.loop_frames = int(round(loop_s * fps)) if loop_s else None
        self.realtime = realtime
        super().__init__(url, fps, live=True)

    def __iter__(self) -> Iterator[DecodedFrame]:
        t0 = time.monotonic()
        index = 0
        while not self._closed.is_set():
            if self.realtime:
                delay = index / self.feed.fps - (time.monotonic() - t0)
                if delay > 0 and self._closed.wait(delay):
                    return
            i = self.start_frame + index
            if self.loop_frames:
                i %= self.loop_frames
            t_render = time.perf_counter()
            rgb = self.feed.frame(i)
            yield DecodedFrame(index, index / self.feed.fps, time.time(), rgb, time.perf_counter() - t_render)
            index += 1


def open_stream(
    url: str,
    *,
    transport: str = "tcp",
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    realtime: bool | None = None,
) -> Stream:
    """Open `rtsp://`, `rtsps://`, a file path / `file://` URL, or `demo://name?...` for decoding.

    Args:
        transport: RTSP lower transport, "tcp" or "udp".
        open_timeout_s / read_timeout_s: a connect or a read that stalls longer raises `StreamTimeoutError`.
        realtime: pace frames at the stream's rate; default True for demo feeds, False for files (live
            sources are paced by the camera).
    Raises `StreamError` subclasses (scrubbed URL) for connection problems, `StreamURLError` for unusable URLs.
    """
    if transport not in TRANSPORTS:
        raise StreamURLError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    for name, value in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s)):
        if not (value > 0 and math.isfinite(value)):
            raise StreamURLError(f"{name} must be a positive number of seconds, got {value!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in LIVE_SCHEMES:
        return PyAVStream(url, url, live=True, transport=transport, open_timeout_s=open_timeout_s,
                          read_timeout_s=read_timeout_s, realtime=False)
    if scheme == "demo":
        return DemoStream(url, realtime=True if realtime is None else realtime)
    if scheme == "file" or scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        path = Path(unquote(parts.path)) if scheme == "file" else Path(url)
        if not path.is_file():
            raise StreamOpenError(url, f"no such file: {path}")
        return PyAVStream(url, str(path), live=False, transport=transport, open_timeout_s=open_timeout_s,
                          read_timeout_s=read_timeout_s, realtime=bool(realtime))
    raise StreamURLError(
        f"{scrub_url(url)}: unsupported URL scheme {scheme!r}; use rtsp://, rtsps://, file:// (or a path), demo://"
    )


def describe_error(e: BaseException) -> str:
    """Exception text without credentials (PyAV quotes the URL it was given)."""
    return scrub_url(f"{type(e).__name__}: {e}")
