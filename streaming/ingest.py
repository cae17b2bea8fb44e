"""The ingest loop of one camera (no Ray): open -> resample -> resize -> ring buffer -> callback, reconnect on errors.

`IngestLoop` is thread-friendly: it hands windows to a non-blocking callback, counts what it decodes, skips and
drops, and reconnects with backoff (`streaming.backoff`). Camera actors wrap it; it knows nothing about Ray.
Sources and their timeout rules are in `streaming.sources`, credentials in `streaming.credentials`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable

from offline.data.decode import resize
from streaming.backoff import Backoff
from streaming.credentials import camera_env_prefix, resolve_credentials, scrub_url
from streaming.ring_buffer import FrameResampler, RingBuffer, CameraWindow
from streaming.sources import Stream, StreamError, StreamURLError, describe_error, open_stream

if TYPE_CHECKING:
    from streaming.config import CameraConfig

@dataclass
class IngestSettings:
    """What `IngestLoop` needs; `IngestSettings.coerce` also accepts any object/dict with these names."""

    transport: str = "tcp"
    fps: float | None = 25.0  # analysis frame rate (None: every decoded frame)
    size: int | None = 256  # frames resized to size x size; None: as decoded (the recorder, streaming/recorder.py)
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
    def for_camera(cls, camera: "CameraConfig", size: int, window: int, hop: int | None = None) -> "IngestSettings":
        """The settings of a configured camera feeding a bundle of input `size`, `window` frames and windows every
        `hop` frames (the bundle's scoring.hop; default: hop = window).

        The one mapping from camera config to ingest settings: camera actors, fault tests and benchmarks use it.
        """
        return cls(
            transport=camera.transport,
            fps=camera.fps,
            size=size,
            window=window,
            hop=hop or window,
            open_timeout_s=camera.open_timeout_s,
            read_timeout_s=camera.read_timeout_s,
            backoff_initial_s=camera.backoff_initial_s,
            backoff_max_s=max(camera.backoff_max_s, camera.backoff_initial_s),
        )

    @classmethod
    def coerce(cls, settings: Any) -> "IngestSettings":
        """`settings` as IngestSettings: None gives the defaults; a dict or object gives its fields of these names."""
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
        """A copy of the counters as a dict (safe to hand to another thread or process)."""
        return dict(self.__dict__)


class IngestLoop:
    """Decode one camera forever: open -> resample -> resize -> ring buffer -> `on_window`, reconnect on errors.

    Args:
        camera_name: label for logs, windows and credentials (`VAD_CAMERA_<NAME>_USER` / `_PASSWORD`, or
            `<credentials_env>_USER` / `_PASSWORD` when given; credentials in the URL win).
        url: source URL (credentials allowed; never logged).
        settings: `IngestSettings` or any object/dict with the same field names.
        on_window: called with each complete `CameraWindow`; must not block. Return False to say the window was
            dropped (the consumer is behind): it is counted in `windows_dropped` / `frames_dropped`.
        on_state: called as `on_state(state, detail)` on every state change; detail is scrubbed.
    `run()` blocks (call it in a thread) or use `start()`; `stop()` returns within about the read timeout.
    """

    def __init__(
        self,
        camera_name: str,
        url: str,
        settings: Any = None,
        on_window: Callable[[CameraWindow], bool | None] = lambda w: None,
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
        """True while the loop's thread is alive."""
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
                self.counters.last_error = describe_error(e)
            self.log.exception("ingest loop crashed")
            self._set_state("error", describe_error(e))
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
                        # a moving average of the interval, not of 1/interval: bursty sources (frames paced in
                        # groups) made the latter read hundreds of fps for a 25 fps stream
                        c.fps_in = 1.0 / dt if c.fps_in == 0 else 1.0 / (0.9 / c.fps_in + 0.1 * dt)
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

    def _deliver(self, window: CameraWindow) -> None:
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
