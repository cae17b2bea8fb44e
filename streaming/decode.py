"""Camera ingest without Ray: open a stream (RTSP, file, demo feed) with PyAV, decode RGB frames, reconnect.

- `open_stream(url, ...)` -> `Stream`: an iterable of `DecodedFrame` with open and read timeouts that fire.
- `IngestLoop`: a thread-friendly loop that resamples, resizes, fills the camera's ring buffer, hands windows to
  a non-blocking callback and reconnects with backoff. Ray actors wrap it; it knows nothing about Ray.
- `scrub_url` / `resolve_credentials`: credentials come from the URL or the environment and never reach a
  log line, a status field or an error message.

PyAV timeout traps, checked against a real GStreamer RTSP server and a server that accepts then stalls
(tests/streaming/test_decode.py):
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
import re
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import numpy as np

from offline.data.decode import resize
from streaming.backoff import Backoff
from streaming.ring_buffer import FrameResampler, RingBuffer, Window

logger = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps")
SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "pass", "token", "key", "secret", "auth", "user", "username"}
TRANSPORTS = ("tcp", "udp")
MAX_CONSECUTIVE_CORRUPT = 50  # undecodable packets in a row before the stream counts as broken


# ----------------------------------------------------------------------------------------------- credentials
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s?#]*)@")
_SECRET_QUERY = re.compile(r"(?P<key>[?&](?:%s)=)[^&#\s'\"]*" % "|".join(sorted(SECRET_QUERY_KEYS)), re.IGNORECASE)


def scrub_url(url: str) -> str:
    """Hide credentials: `rtsp://user:pw@host/x?token=abc` -> `rtsp://***@host/x?token=***`.

    Works on any text (an error message that quotes the URL), not only on well-formed URLs.
    """
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", str(url))
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", text)


def camera_env_prefix(camera: str) -> str:
    """`front door` -> `VAD_CAMERA_FRONT_DOOR`: where a camera's credentials are looked up."""
    return "VAD_CAMERA_" + re.sub(r"[^A-Za-z0-9]+", "_", camera).strip("_").upper()


def resolve_credentials(url: str, env_prefix: str, environ: dict[str, str] | None = None) -> str:
    """Fill user/password from `{env_prefix}_USER` / `{env_prefix}_PASSWORD` when the URL carries none.

    Credentials already in the URL win. Values are percent-encoded so `@`, `:` or `/` in a password are safe.
    """
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    if parts.scheme not in LIVE_SCHEMES or "@" in parts.netloc:
        return url
    user = env.get(f"{env_prefix}_USER")
    password = env.get(f"{env_prefix}_PASSWORD")
    if not user:
        if password:
            logger.warning("%s_PASSWORD is set but %s_USER is not: ignoring the password", env_prefix, env_prefix)
        return url
    userinfo = quote(user, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


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
            raise StreamOpenError(url, f"cannot open: {_describe(e)}") from None
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
                    raise StreamEndedError(self.url, f"read failed: {_describe(e)}") from None
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
                    logger.debug("%s: undecodable packet: %s", self.url, _describe(e))
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

        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        allowed = {"seed", "fps", "size", "anomaly_every_s", "start", "loop_s"}
        unknown = set(query) - allowed
        if unknown:
            raise StreamURLError(f"{scrub_url(url)}: unknown demo parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        try:
            seed = int(query.get("seed", 0))
            fps = float(query.get("fps", 25))
            size = int(query.get("size", 256))
            every = float(query.get("anomaly_every_s", 20))
            self.start_frame = int(query.get("start", 0))
            loop_s = float(query["loop_s"]) if "loop_s" in query else None
            self.feed = DemoFeed(seed=seed, fps=fps, size=size, anomaly_every_s=every or None)
        except ValueError as e:
            raise StreamURLError(f"{scrub_url(url)}: bad demo parameter: {e}") from None
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


def _describe(e: BaseException) -> str:
    """Exception text without credentials (PyAV quotes the URL it was given)."""
    return scrub_url(f"{type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------- ingest loop
@dataclass
class IngestSettings:
    """What `IngestLoop` needs; `IngestSettings.coerce` also accepts any object/dict with these names."""

    transport: str = "tcp"
    fps: float | None = 25.0  # analysis frame rate (None: every decoded frame)
    size: int = 256
    window: int = 16
    hop: int = 16
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    loop_files: bool = True  # a file source restarts at its end (demo, benchmark); else the loop stops
    realtime_files: bool = True  # pace file sources at their frame rate, like a camera
    max_reconnects: int | None = None  # None: retry forever

    @classmethod
    def coerce(cls, settings: Any) -> "IngestSettings":
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        get = settings.get if isinstance(settings, dict) else (lambda k, d: getattr(settings, k, d))
        return cls(**{f.name: get(f.name, getattr(cls(), f.name)) for f in fields(cls)})


@dataclass
class IngestCounters:
    """Per-camera counters (monotonic) and the latest state, for status endpoints and metrics."""

    state: str = "stopped"
    frames_decoded: int = 0
    frames_analysed: int = 0  # kept by the resampler and pushed into the ring
    frames_skipped: int = 0  # dropped by the resampler on purpose (source faster than the analysis rate)
    frames_dropped: int = 0  # frames of windows the consumer refused (scorer behind)
    windows_emitted: int = 0
    windows_dropped: int = 0
    corrupt_frames: int = 0
    reconnects: int = 0  # reconnect attempts: each lost stream and each failed re-open counts one
    disconnects: int = 0  # times a stream that was delivering frames was lost
    last_error: str | None = None  # scrubbed
    retry_in_s: float | None = None  # the backoff delay before the next attempt while reconnecting (else None)
    last_frame_wall_s: float | None = None
    fps_in: float = 0.0  # decoded frames per second (moving average)
    decode_s: float = 0.0  # last frame's decode + colour conversion + resize time, seconds

    def snapshot(self) -> dict[str, Any]:
        return dict(self.__dict__)


STATES = ("connecting", "streaming", "reconnecting", "error", "stopped")


class IngestLoop:
    """Decode one camera forever: open -> resample -> resize -> ring buffer -> `on_window`, reconnect on errors.

    Args:
        camera_name: label for logs, windows and credentials (`VAD_CAMERA_<NAME>_USER` / `_PASSWORD`, or
            `<credentials_env>_USER` / `_PASSWORD` when given; credentials in the URL win).
        url: source URL (credentials allowed; never logged).
        settings: `IngestSettings` or any object/dict with the same field names.
        on_window: called with each complete `Window`; must not block. Return False to say the window was
            dropped (the consumer is behind): it is counted in `windows_dropped` / `frames_dropped`.
        on_state: called as `on_state(state, detail)` on every state change; detail is scrubbed.
    `run()` blocks (call it in a thread) or use `start()`; `stop()` returns within about the read timeout.
    """

    def __init__(
        self,
        camera_name: str,
        url: str,
        settings: Any = None,
        on_window: Callable[[Window], bool | None] = lambda w: None,
        on_state: Callable[[str, str], None] = lambda s, d: None,
        backoff: Backoff | None = None,
        credentials_env: str | None = None,
    ):
        self.camera = camera_name
        self.settings = IngestSettings.coerce(settings)
        self._url = resolve_credentials(url, credentials_env or camera_env_prefix(camera_name))
        self.url = scrub_url(url)
        self.on_window = on_window
        self.on_state = on_state
        s = self.settings
        self.backoff = backoff or Backoff(initial_s=s.backoff_initial_s, max_s=s.backoff_max_s)
        self.counters = IngestCounters()
        self.log = logging.getLogger(f"{__name__}.{camera_name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Stream | None = None
        self._frame_index = 0  # analysed frames since the loop started (across reconnects)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- control
    def start(self) -> "IngestLoop":
        """Run the loop in a daemon thread."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name=f"ingest-{self.camera}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the loop to end; waits up to `timeout_s` (default: read timeout + 1 s). True if it ended."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is None or self._thread is threading.current_thread():
            return True
        self._thread.join(self.settings.read_timeout_s + 1.0 if timeout_s is None else timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """A copy of the counters (scrubbed), safe to return from a status endpoint."""
        with self._lock:
            snap = self.counters.snapshot()
        snap["camera"] = self.camera
        snap["url"] = self.url
        return snap

    # ---------------------------------------------------------------------------------------------- loop
    def _set_state(self, state: str, detail: str = "") -> None:
        detail = scrub_url(detail)
        with self._lock:
            changed = self.counters.state != state
            self.counters.state = state
        if changed or state == "reconnecting":
            self.log.info("state %s%s", state, f": {detail}" if detail else "")
            try:
                self.on_state(state, detail)
            except Exception:  # noqa: BLE001 - a broken callback must not kill the camera
                self.log.exception("on_state callback failed")

    def run(self) -> None:
        """The loop itself (blocking). Ends on `stop()`, on an unusable URL, or at the end of a non-looped file."""
        s = self.settings
        ring = RingBuffer(s.window, s.hop, camera=self.camera)
        resampler = FrameResampler(s.fps)
        attempts = 0  # failed attempts since the last frame
        self._set_state("connecting", "")
        try:
            while not self._stop.is_set():
                try:
                    if self._stream_once(ring, resampler) and not s.loop_files:
                        break  # a file ended and is not looped
                    continue  # a looped file ended: reopen at once
                except StreamURLError as e:
                    with self._lock:
                        self.counters.last_error = scrub_url(str(e))
                    self._set_state("error", str(e))
                    return
                except StreamError as e:
                    if self._stop.is_set():
                        break
                    was_streaming = self.counters.state == "streaming"
                    attempts = 1 if was_streaming else attempts + 1
                    with self._lock:
                        self.counters.disconnects += int(was_streaming)
                        self.counters.last_error = str(e)
                        self.counters.reconnects += 1
                    if s.max_reconnects is not None and attempts > s.max_reconnects:
                        self._set_state("error", f"giving up after {s.max_reconnects} reconnects: {e}")
                        return
                    delay = self.backoff.next()
                    with self._lock:
                        self.counters.retry_in_s = round(delay, 3)
                    self._set_state("reconnecting", f"{e}; retry in {delay:.1f}s")
                    if self._stop.wait(delay):
                        break
        except Exception as e:  # noqa: BLE001 - report, never die silently
            with self._lock:
                self.counters.last_error = _describe(e)
            self.log.exception("ingest loop crashed")
            self._set_state("error", _describe(e))
            return
        self._set_state("stopped", "")

    def _stream_once(self, ring: RingBuffer, resampler: FrameResampler) -> bool:
        """Open, decode until the stream ends or stops; True if a file ended normally. StreamError otherwise."""
        s = self.settings
        ring.reset()  # a window never spans a reconnect
        resampler.reset()
        stream = open_stream(self._url, transport=s.transport, open_timeout_s=s.open_timeout_s,
                             read_timeout_s=s.read_timeout_s, realtime=s.realtime_files)
        self._stream = stream
        if self._stop.is_set():  # stop() raced with the open
            stream.close()
        corrupt_seen = 0
        last_t = time.monotonic()
        try:
            with stream:
                for frame in stream:
                    t_start = time.monotonic()
                    if self.counters.state != "streaming":
                        self.backoff.reset()
                        with self._lock:
                            self.counters.retry_in_s = None
                        self._set_state("streaming", "")
                    keep = resampler.keep(frame.pts_s)
                    rgb = resize(frame.rgb, s.size) if keep else None
                    now = time.monotonic()
                    with self._lock:
                        c = self.counters
                        c.frames_decoded += 1
                        c.corrupt_frames += stream.corrupt_frames - corrupt_seen
                        corrupt_seen = stream.corrupt_frames
                        c.last_frame_wall_s = frame.wall_s
                        dt = max(now - last_t, 1e-6)
                        c.fps_in = 1.0 / dt if c.fps_in == 0 else 0.9 * c.fps_in + 0.1 / dt
                        c.decode_s = frame.decode_s + (now - t_start)
                        if not keep:
                            c.frames_skipped += 1
                        else:
                            c.frames_analysed += 1
                    last_t = now
                    if rgb is None:
                        continue
                    window = ring.push(rgb, self._frame_index, frame.wall_s)
                    self._frame_index += 1
                    if window is not None:
                        self._deliver(window)
                    if self._stop.is_set():
                        break
        finally:
            self._stream = None
        return not stream.live and not self._stop.is_set()

    def _deliver(self, window: Window) -> None:
        try:
            accepted = self.on_window(window)
        except Exception:  # noqa: BLE001 - the consumer's bug must not stop decoding
            self.log.exception("on_window callback failed; window dropped")
            accepted = False
        with self._lock:
            if accepted is False:
                self.counters.windows_dropped += 1
                self.counters.frames_dropped += len(window.indices)
            else:
                self.counters.windows_emitted += 1
