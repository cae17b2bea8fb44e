"""A recording directory: its segments and its manifest `recording.json`, reconciled with the disk on open.

The manifest holds what a resumed run needs: the frame rate and size cap it was recorded with (a resume that would
change them is refused: one training set, one frame rate), the closed segments (frames, seconds, bytes) and the
last run's state and error. It never holds a URL with credentials (only `scrub_url`'s form). It is written
atomically (temporary file, fsync, rename), so a crash leaves the old or the new one. On open, the disk wins:
finished segments missing from the manifest (a crash between the rename and the manifest write) are added,
listed ones that are gone are dropped, and partial files of a crashed run are rescued (streaming/segments.py).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.data.decode import probe_video
from streaming.credentials import scrub_url
from streaming.segments import PARTIAL, Segment, salvage, segment_index

logger = logging.getLogger(__name__)

MANIFEST = "recording.json"
FORMAT = 1


class RecordingDirError(ValueError):
    """The directory cannot be recorded into with these settings (the message says why and what would work)."""


@dataclass
class RecordingDir:
    """The state of one recording directory; `open_dir` builds it, `save` writes the manifest."""

    path: Path
    fps: float
    max_side: int | None
    segments: list[Segment] = field(default_factory=list)
    source: str = ""  # scrubbed
    camera: str = ""
    state: str = "new"
    error: str | None = None
    reconnects: int = 0  # over all runs
    requested_s: float | None = None  # the last run's target
    started_s: float | None = None  # when the first run started (epoch seconds)

    @property
    def frames(self) -> int:
        """Frames in the closed segments."""
        return sum(s.frames for s in self.segments)

    @property
    def seconds(self) -> float:
        """Seconds of footage in the closed segments (frames / fps)."""
        return self.frames / self.fps

    @property
    def bytes(self) -> int:
        """Bytes of the closed segments."""
        return sum(s.bytes for s in self.segments)

    def next_index(self) -> int:
        """The number of the next segment: one past every segment and partial file in the directory."""
        used = [s for s in (segment_index(p.name) for p in self.path.iterdir()) if s is not None]
        used += [segment_index(s.file) or 0 for s in self.segments]
        return max(used, default=0) + 1

    def save(self) -> None:
        """Write the manifest atomically (the URL was scrubbed when it was set)."""
        data = {
            "format": FORMAT,
            "camera": self.camera,
            "source": scrub_url(self.source),
            "fps": self.fps,
            "max_side": self.max_side,
            "state": self.state,
            "error": scrub_url(self.error) if self.error else None,
            "reconnects": self.reconnects,
            "requested_s": self.requested_s,
            "started_s": self.started_s,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "bytes": self.bytes,
            "segments": [s.as_dict() for s in self.segments],
            "updated_s": time.time(),
        }
        tmp = self.path / f".{MANIFEST}.tmp"
        with tmp.open("w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / MANIFEST)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise RecordingDirError(f"{file}: unreadable manifest ({exc}); move it away to start a new recording here") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecordingDirError(f"{file}: not a recording manifest of format {FORMAT}")
    return data


def open_dir(path: Path, fps: float | None, max_side: int | None, *, fps_name: str = "fps",
             max_side_name: str = "max_side", default_fps: float = 5.0) -> RecordingDir:
    """Open (or create) a recording directory for recording at `fps` with frames capped at `max_side`.

    None for `fps` / `max_side` means "as recorded so far" (a new directory: `default_fps`, full resolution);
    0 for `max_side` means full resolution. A value other than the manifest's raises RecordingDirError naming the
    option (`fps_name`, `max_side_name`). Partial files of a crashed run are rescued into closed segments.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    data = _read_manifest(path)
    if data is None:
        segments_on_disk = [p for p in path.iterdir() if segment_index(p.name) is not None]
        if segments_on_disk:
            raise RecordingDirError(f"{path}: holds segments but no {MANIFEST}; record into another directory")
        cap = max_side or None
        return RecordingDir(path, float(fps or default_fps), cap)
    rec = RecordingDir(
        path,
        float(data["fps"]),
        data.get("max_side"),
        [Segment(**s) for s in data.get("segments", [])],
        data.get("source", ""),
        data.get("camera", ""),
        data.get("state", "new"),
        data.get("error"),
        int(data.get("reconnects", 0)),
        data.get("requested_s"),
        data.get("started_s"),
    )
    if fps is not None and abs(fps - rec.fps) > 1e-9:
        raise RecordingDirError(
            f"{fps_name}: {path} was recorded at {rec.fps:g} fps ({MANIFEST}); {fps:g} would mix frame rates in one "
            f"training set. Record into another directory, or use {rec.fps:g}"
        )
    if max_side is not None and (max_side or None) != rec.max_side:
        was = rec.max_side or "full resolution"
        raise RecordingDirError(
            f"{max_side_name}: {path} was recorded with frames capped at {was} ({MANIFEST}); record into another "
            f"directory to change it"
        )
    _reconcile(rec)
    return rec


def _reconcile(rec: RecordingDir) -> None:
    """Make the segment list match the disk: rescue partial files, add unlisted segments, drop missing ones."""
    listed = {s.file for s in rec.segments}
    kept = [s for s in rec.segments if (rec.path / s.file).is_file()]
    for s in rec.segments:
        if s not in kept:
            logger.warning("%s: segment %s is listed but gone; no longer counted", rec.path, s.file)
    for p in sorted(rec.path.iterdir()):
        if segment_index(p.name) is None or p.name in listed:
            continue
        if p.name.endswith(PARTIAL):
            rescued = salvage(p, rec.fps)
            if rescued is not None:
                kept.append(rescued)
        elif not p.name.startswith("."):
            frames, _ = probe_video(p)
            kept.append(Segment(p.name, frames, round(frames / rec.fps, 3), p.stat().st_size, 0, 0))
            logger.warning("%s: segment %s was not in %s (a crash after closing it); counted", rec.path, p.name, MANIFEST)
    kept.sort(key=lambda s: segment_index(s.file) or 0)
    if kept != rec.segments:
        rec.segments = kept
        rec.save()
