"""Record a camera's normal footage into a directory of segments that `vad train --data DIR` reads as it is.

Frames come through the live decode path: `streaming.ingest.IngestLoop` over `streaming.sources` (open and read
timeouts, reconnects with backoff, credentials from the URL or `VAD_CAMERA_<NAME>_USER` / `_PASSWORD`, never written
or logged). They are kept at the recording's frame rate (the camera's analysis fps unless told otherwise), scaled
down to a maximum side when one is set, and encoded into segments (streaming/segments.py). A segment is closed when
it holds `segment_s` seconds, when the stream drops (no segment spans a gap, as no scoring window does), when the
target is reached, and on stop; closed segments are never touched again. The directory's manifest
(streaming/recording_dir.py) lets a rerun continue the numbering and count what is already recorded toward the
target; a disk limit (streaming/disk_limit.py) is checked before starting and before every packet.
`vad record` is streaming/record_cli.py; the service runs a Recorder per recording (streaming/recordings.py).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import av

from offline.data.decode import resize
from streaming.credentials import scrub_url
from streaming.disk_limit import DiskLimit, DiskLimitError
from streaming.ingest import IngestLoop, IngestSettings
from streaming.recording_dir import RecordingDir, RecordingDirError, open_dir
from streaming.ring_buffer import CameraWindow
from streaming.segments import Segment, SegmentWriter
from streaming.sources import describe_error

logger = logging.getLogger(__name__)

STATES = ("queued", "recording", "done", "failed", "stopped")
ACTIVE = ("queued", "recording")


@dataclass
class RecordSettings:
    """How footage is recorded.

    fps: frames kept per second; None: as recorded so far in the directory, else `default_fps`.
    max_side: frames larger than this (longest side, pixels) are scaled down; 0: full resolution; None: as
        recorded so far (a new directory: full resolution).
    segment_s: seconds of footage per segment file.
    crf: x264 quality (18: visually near lossless).
    names: what error messages call these settings (CLI options or request fields).
    """

    fps: float | None = None
    max_side: int | None = None
    segment_s: float = 300.0
    crf: int = 18
    default_fps: float = 5.0
    names: dict[str, str] = dataclasses.field(default_factory=lambda: {"fps": "fps", "max_side": "max_side"})


def even_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) of a frame after the `max_side` cap (aspect kept), both even as H.264 in yuv420p needs."""
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    h, w = max(2, round(height * scale)), max(2, round(width * scale))
    return h - h % 2, w - w % 2


class Recorder:
    """Records `requested_s` seconds of footage in all (this and earlier runs) from `url` into `out`.

    Args:
        url: camera URL (rtsp://, rtsps://, a file, demo://); credentials allowed, never written or logged.
        ingest: decode settings (transport, timeouts, backoff, reconnects); fps, size and windows are set here.
        limit: the disk limit (checked before starting and before each packet).
        camera: name for logs and for credentials from the environment (VAD_CAMERA_<NAME>_...).
        credentials_env: environment prefix for the credentials instead of VAD_CAMERA_<NAME>.
        on_progress: called with `progress()` after every frame and state change (from the decoding thread).
    `run()` blocks until the target is reached, the source fails for good, the limit is reached or `stop()`.
    Frames are encoded in the decoding thread (the ingest loop's callback), not handed to a queue: at a recording's
    few frames per second, libx264 (veryfast, zerolatency) takes milliseconds a frame, so the decoder is not held
    up, and no frame is dropped for want of room in a queue.
    """

    def __init__(self, url: str, out: Path, requested_s: float, *, settings: RecordSettings, limit: DiskLimit,
                 ingest: IngestSettings | None = None, camera: str = "camera", credentials_env: str | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None):
        if not (requested_s > 0 and math.isfinite(requested_s)):
            raise ValueError(f"requested seconds must be a positive number, got {requested_s!r}")
        self._url = url
        self.source = scrub_url(url)
        self.out = Path(out)
        self.requested_s = float(requested_s)
        self.settings = settings
        self.limit = limit
        self.ingest = ingest or IngestSettings(loop_files=False, realtime_files=False)
        self.camera = camera
        self.credentials_env = credentials_env
        self.on_progress = on_progress
        self.state = "queued"
        self.error: str | None = None
        self.dir: RecordingDir | None = None
        self._writer: SegmentWriter | None = None
        self._loop: IngestLoop | None = None
        self._lock = threading.RLock()
        self._ended = threading.Event()
        self._stop_asked = False
        self._ingest_state = "stopped"
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self.refused = False  # failed before recording anything: the disk limit or the directory said no
        self._base_reconnects = 0  # of earlier runs (the manifest's)
        self.started_s: float | None = None
        self.finished_s: float | None = None

    # ------------------------------------------------------------------------------------------- status
    def progress(self) -> dict[str, Any]:
        """State and progress (safe from any thread): seconds recorded of requested, segments, bytes, error."""
        with self._lock:
            rec, writer = self.dir, self._writer
            open_frames = writer.frames if writer else 0
            fps = rec.fps if rec else (self.settings.fps or self.settings.default_fps)
            recorded = ((rec.frames if rec else 0) + open_frames) / fps
            loop_stats = self._loop.stats() if self._loop else {}
            return {
                "state": self.state,
                "camera": self.camera,
                "source": self.source,
                "dir": str(self.out),
                "fps": fps,
                "max_side": rec.max_side if rec else self.settings.max_side or None,
                "requested_s": round(self.requested_s, 3),
                "recorded_s": round(recorded, 3),
                "progress": round(min(1.0, recorded / self.requested_s), 4),
                "segments": len(rec.segments) if rec else 0,
                "open_segment": writer is not None,
                "bytes": (rec.bytes if rec else 0) + (writer.muxed_bytes if writer else 0),
                "ingest_state": loop_stats.get("state", self._ingest_state),
                "reconnects": self._base_reconnects + loop_stats.get("reconnects", 0),
                "error": scrub_url(self.error) if self.error else None,
                "started_s": self.started_s,
                "finished_s": self.finished_s,
            }

    def _report(self) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(self.progress())
            except Exception:  # noqa: BLE001 - a broken progress display must not stop the recording
                logger.exception("progress callback failed")

    # ------------------------------------------------------------------------------------------ control
    def run(self) -> dict[str, Any]:
        """Record until done, failed or stopped; returns the final `progress()`. Never raises for stream, disk or
        directory problems: they end in state "failed" with the reason in `error`."""
        self.started_s = time.time()
        try:
            self.limit.start()  # first: a refusal leaves no trace on the disk
            s = self.settings
            self.dir = open_dir(self.out, s.fps, s.max_side, fps_name=s.names["fps"], max_side_name=s.names["max_side"],
                                default_fps=s.default_fps)
            self._base_reconnects = self.dir.reconnects
            if self.dir.frames >= self._target_frames():
                logger.info("%s already holds %.1f s of the %.1f s requested: nothing to record", self.out,
                            self.dir.seconds, self.requested_s)
                return self._finish("done", None)
        except (RecordingDirError, DiskLimitError) as exc:
            self.refused = True
            return self._finish("failed", str(exc))
        except OSError as exc:
            self.refused = True
            return self._finish("failed", f"{self.out}: {describe_error(exc)}")
        settings = dataclasses.replace(self.ingest, fps=self.dir.fps, size=None, window=1, hop=1)
        with self._lock:
            self.state = "recording"
            self.dir.source, self.dir.camera, self.dir.state, self.dir.error = self.source, self.camera, "recording", None
            self.dir.requested_s, self.dir.started_s = self.requested_s, self.dir.started_s or self.started_s
            self.dir.save()
            self._loop = IngestLoop(self.camera, self._url, settings, on_window=self._on_window,
                                    on_state=self._on_state, credentials_env=self.credentials_env)
        logger.info("recording %s into %s: %.1f of %.1f s so far, %g fps", self.source, self.out, self.dir.seconds,
                    self.requested_s, self.dir.fps)
        self._loop.start()
        try:
            while not self._ended.wait(0.5) and self._loop.running:
                pass
        except KeyboardInterrupt:
            self._stop_asked = True
        ended = self._loop.stop()
        with self._lock:
            if not ended:  # stuck in a read: leave its segment alone (the next run rescues the partial file)
                logger.error("%s: the decoder did not stop in time; its open segment is left to the next run", self.out)
                self._writer = None
            if self.state == "recording":
                if self._stop_asked:
                    return self._finish("stopped", None)
                self._finish("failed", f"the source ended after {self.progress()['recorded_s']:.1f} s of "
                                       f"{self.requested_s:.1f} s")
            return self.progress()

    def stop(self) -> None:
        """Stop recording (from any thread): the open segment is closed, state "stopped" unless already ended."""
        self._stop_asked = True
        self._ended.set()

    # ------------------------------------------------------------------------------- decoding thread side
    def _target_frames(self) -> int:
        return math.ceil(self.requested_s * self.dir.fps - 1e-6)

    def _on_state(self, state: str, detail: str) -> None:
        with self._lock:
            self._ingest_state = state
            if state == "reconnecting" and self._writer is not None:
                logger.info("%s: stream lost (%s); segment closed, recording goes on after the reconnect", self.out, detail)
                self._close_segment()
            elif state == "error":
                self._finish("failed", detail)
        if state in ("stopped", "error"):
            self._ended.set()
        self._report()

    def _on_window(self, window: CameraWindow) -> bool:
        with self._lock:
            if self.state != "recording" or self._stop_asked:
                return True
            frame = window.frames[-1]
            shape = frame.shape[:2]
            if shape not in self._sizes:
                self._sizes[shape] = even_size(*shape, self.dir.max_side)
            size = self._sizes[shape]
            if size != shape:
                frame = resize(frame, size)
            try:
                if self._writer is not None and (self._writer.height, self._writer.width) != size:
                    self._close_segment()  # the camera changed resolution: a new segment
                if self._writer is None:
                    self._writer = SegmentWriter(self.out, self.dir.next_index(), self.dir.fps, size[1], size[0],
                                                 self.settings.crf)
                    self.limit.begin(self._writer.path)
                packets = self._writer.encode(frame)
                if not self.limit.allow(sum(p.size for p in packets)):
                    recorded = self.progress()["recorded_s"]
                    self._finish("failed", f"{self.limit.reached()}; stopped after {recorded:.1f} s of "
                                           f"{self.requested_s:.1f} s (closed segments are kept)")
                    return True
                self._writer.mux(packets)
                if self._writer.frames >= max(1, round(self.settings.segment_s * self.dir.fps)):
                    self._close_segment()
            except (OSError, av.error.FFmpegError, ValueError) as exc:
                self._finish("failed", f"cannot write a segment in {self.out}: {describe_error(exc)}")
                return True
            if self.dir.frames + (self._writer.frames if self._writer else 0) >= self._target_frames():
                self._finish("done", None)
        self._report()
        return True

    def _close_segment(self) -> Segment | None:
        """Finalize the open segment (an empty one is dropped) and write the manifest."""
        writer, self._writer = self._writer, None
        if writer is None:
            return None
        try:
            if writer.frames == 0:
                writer.abort()
                writer.path.unlink(missing_ok=True)
                return None
            try:
                segment = writer.close()
            except (OSError, av.error.FFmpegError) as exc:
                writer.abort()
                self.error = self.error or f"cannot close segment {writer.path.name}: {describe_error(exc)}"
                logger.error("%s: %s (the next run rescues what it can)", self.out, self.error)
                return None
            self.dir.segments.append(segment)
            self.dir.save()
        finally:
            self.limit.end()
        logger.info("%s: segment %s closed (%d frames, %d bytes)", self.out, segment.file, segment.frames, segment.bytes)
        return segment

    def _finish(self, state: str, error: str | None) -> dict[str, Any]:
        """End in `state` (once): close the open segment, write the manifest, stop decoding."""
        with self._lock:
            if self.state not in ACTIVE:
                return self.progress()
            self.state, self.error = state, scrub_url(error) if error else None
            if self.dir is not None:
                self._close_segment()
                if self._loop is not None:
                    self.dir.reconnects = self._base_reconnects + self._loop.stats().get("reconnects", 0)
                self.dir.state, self.dir.error = self.state, self.error
                try:
                    self.dir.save()
                except OSError as exc:
                    logger.error("%s: cannot write the manifest: %s", self.out, describe_error(exc))
            self.finished_s = time.time()
            log = logger.info if state == "done" else logger.error if state == "failed" else logger.warning
            log("recording into %s %s%s", self.out, state, f": {self.error}" if self.error else "")
        self._ended.set()
        if self._loop is not None:
            self._loop.stop(timeout_s=0)
        return self.progress()
