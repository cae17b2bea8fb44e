"""Alert footage on disk: one H.264 clip per closed event, and a false alarm's clip kept as the camera's normal footage.

Files (one scorer or several, on the filesystem they already share for the events database):
  <events.clips_dir()>/event-<id>.mkv   the frames of the windows the alert covered (streaming/clip_buffer.py),
      written in the background when the event closes (a hidden `.event-<id>.partial.mkv` meanwhile), at the
      camera's analysis fps, which the file records.
  <recordings.root>/<camera>/feedback/event-<id>.mkv   a copy while the event is labelled `false_alarm`: the videos
      layout reads it, so the camera's next learn trains on it as normal footage (offline/learn.py keeps feedback
      clips in training, never in the unseen evaluation set); labelling the event `anomaly` removes it.

The clips hold the frames the scorer already has, at the model's input size (the camera actor resizes before a
window leaves it; full-size frames exist only in the camera's decoder): that is what the model judged, small (a
30 s clip of 64x64 frames is tens of KB), and what learn reads anyway (it resizes footage to its input size). A
learn at a larger input size than the clip's upsamples it. Windows dropped by a busy scorer leave gaps in a clip.

Disk: a clip goes when its event is pruned (events.retention_days, events.max_events) and the oldest clips go beyond
`events.clips_max_bytes` (their events stay, with `clip: false`). A feedback copy is training footage, no longer the
event's: it stays when the event is pruned (delete it under recordings.root to forget it). No Ray.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from offline.data.encode import write_video
from offline.learn import FEEDBACK_DIR
from streaming.config import NAME_PATTERN
from streaming.events import Event, EventStore

logger = logging.getLogger(__name__)

CLIP_CRF = 18  # x264 quality of the clips, as recordings.crf's default: near lossless
SINCE_FILE = ".since"  # holds the time clips were first kept here: older events predate the feature
STALE_PARTIAL_S = 3600.0  # a partial clip this old is a crashed writer's: removed by `prune`
_CLIP = re.compile(r"^event-(\d+)\.mkv$")


def clip_frames(seconds: float, fps: float) -> int:
    """Frames of `seconds` at `fps` (0 seconds: 0, clips off)."""
    return max(0, math.ceil(seconds * fps)) if seconds > 0 else 0


class EventClips:
    """The clip files of the events of one events database, and their feedback copies (see the module docstring).

    Args:
        directory: where the clips go (`EventsConfig.clips_dir()`).
        max_bytes: most bytes all clips may hold; the oldest events' clips are removed beyond it.
        feedback_root: recordings.root (a camera's learn reads <root>/<camera>/); None: false alarms are not kept.
        enabled: False when clips are off (`events.clip_seconds: 0`); only answers why an event has none.
    """

    def __init__(self, directory: str | Path, max_bytes: int, feedback_root: str | Path | None = None,
                 enabled: bool = True, crf: int = CLIP_CRF):
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        self.feedback_root = None if feedback_root is None else Path(feedback_root)
        self.enabled = enabled
        self.crf = crf
        self.since = self._since() if enabled else None
        self._lock = threading.Lock()  # a label's copy or removal vs the writer's, within this process
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="event-clips")

    def _since(self) -> float | None:
        """When this directory started keeping clips (created now on first use); None if it cannot be created."""
        marker = self.dir / SINCE_FILE
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                marker.write_text(f"{time.time():.3f}\n")
            return float(marker.read_text().strip())
        except (OSError, ValueError) as exc:
            logger.error("event clips: %s cannot be used: %s", self.dir, exc)
            return None

    # ------------------------------------------------------------------------------------------------ paths
    def path(self, event_id: int) -> Path:
        """The clip file of event `event_id` (it may not exist)."""
        return self.dir / f"event-{int(event_id)}.mkv"

    def partial(self, event_id: int) -> Path:
        """The hidden file a clip is written to before it is renamed into place."""
        return self.dir / f".event-{int(event_id)}.partial.mkv"

    def feedback_path(self, camera: str, event_id: int) -> Path | None:
        """Where a false alarm's clip goes for the camera's next learn; None without a recordings root."""
        if self.feedback_root is None:
            return None
        if not re.match(NAME_PATTERN, camera):  # never a path out of the root, whatever the database holds
            raise ValueError(f"event {event_id}: camera {camera!r} is not a camera name")
        return self.feedback_root / camera / FEEDBACK_DIR / f"event-{int(event_id)}.mkv"

    def exists(self, event_id: int) -> bool:
        """True when event `event_id` has a clip."""
        return self.path(event_id).is_file()

    def read(self, event_id: int) -> bytes | None:
        """The clip's bytes (Matroska, H.264), or None."""
        try:
            return self.path(event_id).read_bytes()
        except FileNotFoundError:
            return None

    # ----------------------------------------------------------------------------------------------- writes
    def begin(self, event_id: int) -> None:
        """Mark the event's clip as being written (before its event is closed: a label then answers "pending")."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.partial(event_id).touch()
        except OSError as exc:
            logger.error("event %d: cannot start its clip in %s: %s", event_id, self.dir, exc)

    def save(self, event_id: int, camera: str, frames: np.ndarray, fps: float, store: EventStore) -> Future:
        """Write the event's clip in the background (H.264, `fps` recorded), then prune, then keep it as feedback
        when the event is already labelled false_alarm. The returned future is done when all that is."""
        self.begin(event_id)
        return self._writer.submit(self._write, int(event_id), camera, frames, float(fps), store)

    def _write(self, event_id: int, camera: str, frames: np.ndarray, fps: float, store: EventStore) -> None:
        partial = self.partial(event_id)
        try:
            write_video(frames, partial, fps, crf=self.crf)
            os.replace(partial, self.path(event_id))
        except Exception:  # noqa: BLE001 - a clip lost is logged; scoring and the event go on
            logger.exception("event %d (camera %s): writing its clip to %s failed", event_id, camera, self.dir)
            partial.unlink(missing_ok=True)
            return
        logger.info("event %d (camera %s): clip of %d frames kept", event_id, camera, len(frames))
        try:
            self.prune(store)
            with self._lock:  # labelled false_alarm before its clip was there: keep it now
                ev = store.get_event(event_id)
                if ev is not None and ev.label == "false_alarm":
                    self._apply(ev)
        except Exception:  # noqa: BLE001
            logger.exception("event %d: pruning clips or keeping its feedback footage failed", event_id)

    def prune(self, store: EventStore) -> int:
        """Remove the clips of events no longer stored, stale partial files, then the oldest clips beyond
        `max_bytes`; returns how many files went."""
        if not self.dir.is_dir():
            return 0
        live = store.event_ids()
        clips: list[tuple[int, Path, int]] = []
        removed = 0
        now = time.time()
        for p in self.dir.iterdir():
            try:
                m = _CLIP.match(p.name)
                if m and int(m.group(1)) in live:
                    clips.append((int(m.group(1)), p, p.stat().st_size))
                elif m or (p.name.endswith(".partial.mkv") and now - p.stat().st_mtime > STALE_PARTIAL_S):
                    p.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:  # another scorer pruned it meanwhile
                continue
        total = sum(size for _, _, size in clips)
        for _, p, size in sorted(clips):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

    def label(self, store: EventStore, event_id: int, label: str) -> dict[str, Any] | None:
        """Record the operator's label and put the event's footage where it says, in one step (a clip being
        written meanwhile sees the new label); None when there is no such event. See `_apply` for the answer."""
        with self._lock:
            if not store.set_label(event_id, label):
                return None
            ev = store.get_event(event_id)
            return None if ev is None else self._apply(ev)

    def _apply(self, ev: Event) -> dict[str, Any]:
        """A false alarm's clip copied under the camera's recordings' feedback folder, an anomaly's removed from it.
        Returns {"footage": "kept" | "removed" | "pending" | "none", "footage_path" when kept, "footage_reason" when
        pending or none}. Call with `_lock` held."""
        target = self.feedback_path(ev.camera, ev.id)
        if ev.label != "false_alarm":
            if target is not None:
                target.unlink(missing_ok=True)
            return {"footage": "removed"}
        if target is None:
            return {"footage": "none", "footage_reason": "no recordings root to keep footage in (recordings.root)"}
        if self.exists(ev.id):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.partial")  # hidden: a learn never reads half a copy
            shutil.copyfile(self.path(ev.id), tmp)
            os.replace(tmp, target)
            return {"footage": "kept", "footage_path": str(target)}
        if self.partial(ev.id).exists() or (self.enabled and ev.status == "open"):
            return {"footage": "pending", "footage_reason": "the alert is still open or its clip is being written: "
                    "its footage is kept as normal footage when the clip is done"}
        return {"footage": "none", "footage_reason": self.missing_reason(ev.reason, ev.end_s)}

    def missing_reason(self, reason: str, end_s: float | None) -> str:
        """Why a closed event has no clip."""
        if not self.enabled:
            return "alert clips are off (events.clip_seconds: 0)"
        if self.since is not None and end_s is not None and end_s < self.since:
            return "the event predates alert clips"
        if reason == "restart":
            return "the service stopped while the alert was open: its frames were lost"
        return "its clip was pruned (events.clips_max_bytes) or could not be written"

    def close(self) -> None:
        """Finish the clips being written (the service stops)."""
        self._writer.shutdown(wait=True)
