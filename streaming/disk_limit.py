"""How many more bytes a recording may write: a byte limit on a directory tree and a free-space margin on its disk.

`DiskLimit.start()` refuses to begin without room (the error names the limit); `allow(n)` is asked before each
packet is written and answers False once the room is used up. The tree's usage and the disk's free space are
measured at start, at each segment close and at most every `rescan_s` seconds (so recordings sharing a root see
each other's files, within about a second of buffered footage); the file being written (`begin`/`end`) is counted
by the bytes allowed for it, not by its size on disk, which lags behind the muxer's buffer.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

SEGMENT_RESERVE = 16 * 1024  # a segment's bytes beyond its packets: Matroska header, block and cluster headers, index
PACKET_OVERHEAD = 32  # Matroska bytes per packet beyond its payload (block header, cluster share), rounded up
MIN_ROOM = 4 * SEGMENT_RESERVE  # less room than this at the start: refuse (not even one short segment fits)


class DiskLimitError(OSError):
    """Not enough room to start or go on recording; the message names the limit (config field or option)."""


def tree_bytes(root: Path, exclude: Path | None = None) -> int:
    """Bytes of the regular files under `root` but `exclude` (0 when it does not exist); files vanishing meanwhile
    are skipped."""
    total = 0
    skip = os.fspath(exclude) if exclude is not None else None
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if path == skip:
                continue
            try:
                total += os.lstat(path).st_size
            except OSError:
                continue
    return total


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (for messages)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class DiskLimit:
    """At most `max_bytes` under `root` (None: no byte limit) and at least `min_free_bytes` left free on its disk.

    `names` are what the messages call the two limits: config fields (`recordings.max_bytes`) or CLI options.
    """

    root: Path
    max_bytes: int | None
    min_free_bytes: int
    names: tuple[str, str] = ("max_bytes", "min_free_bytes")
    rescan_s: float = 5.0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._room = 0
        self._scanned_at = 0.0
        self._used = 0
        self._free = 0
        self._own: Path | None = None  # the file being written
        self._own_bytes = 0  # bytes allowed for it so far
        self._refused = 0  # the write `allow` last refused

    def _existing(self) -> Path:
        """The nearest existing directory at or above the root (the disk whose free space counts)."""
        path = self.root.resolve()
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    def begin(self, path: Path) -> None:
        """`path` (under the root) is being written from now on: count it by the bytes `allow`ed for it."""
        self._own, self._own_bytes = Path(path), 0

    def end(self) -> None:
        """The file being written is closed (or gone): measure it on disk again, and measure now."""
        self._own, self._own_bytes = None, 0
        self.scan()

    def scan(self) -> int:
        """Measure usage and free space now; returns the room left (bytes, may be negative)."""
        on_disk = 0
        if self._own is not None:
            try:
                on_disk = self._own.stat().st_size
            except OSError:
                on_disk = 0
        self._used = tree_bytes(self.root, exclude=self._own) + self._own_bytes
        self._free = shutil.disk_usage(self._existing()).free - max(0, self._own_bytes - on_disk)
        room = self._free - self.min_free_bytes
        if self.max_bytes is not None:
            room = min(room, self.max_bytes - self._used)
        self._room = room - SEGMENT_RESERVE
        self._scanned_at = time.monotonic()
        return self._room

    def start(self) -> None:
        """Raise DiskLimitError naming the limit when there is no room to start recording."""
        room = self.scan() + SEGMENT_RESERVE
        if room >= MIN_ROOM:
            return
        max_name, free_name = self.names
        if self.max_bytes is not None and self.max_bytes - self._used < MIN_ROOM:
            raise DiskLimitError(
                f"{max_name}: {self.root} already holds {format_bytes(self._used)} of the {format_bytes(self.max_bytes)} "
                f"limit ({self.max_bytes} bytes); recording needs at least {format_bytes(MIN_ROOM)} more. "
                f"Raise {max_name} or remove old recordings"
            )
        raise DiskLimitError(
            f"{free_name}: the disk holding {self.root} has {format_bytes(self._free)} free and must keep "
            f"{format_bytes(self.min_free_bytes)} free ({self.min_free_bytes} bytes); recording needs at least "
            f"{format_bytes(MIN_ROOM)} more. Free some space or lower {free_name}"
        )

    def allow(self, nbytes: int) -> bool:
        """True (and counted) when `nbytes` more may be written now; False once the limit is reached."""
        if time.monotonic() - self._scanned_at >= self.rescan_s:
            self.scan()
        cost = nbytes + PACKET_OVERHEAD
        if cost > self._room:
            self.scan()  # maybe another recording's files went away; the exact answer decides
            if cost > self._room:
                self._refused = cost
                return False
        self._room -= cost
        self._own_bytes += cost
        return True

    def reached(self) -> str:
        """Which limit stopped the recording, for the error message (after `allow` said False)."""
        max_name, free_name = self.names
        fit = (f"the next frame ({format_bytes(self._refused)}) does not fit beside the {format_bytes(SEGMENT_RESERVE)} "
               f"kept for closing a segment")
        if self.max_bytes is not None and self.max_bytes - self._used <= self._free - self.min_free_bytes:
            return (f"{max_name} reached: {self.root} holds {format_bytes(self._used)} of the "
                    f"{format_bytes(self.max_bytes)} limit ({self.max_bytes} bytes); {fit}")
        return (f"{free_name} reached: {format_bytes(self._free)} free on the disk holding {self.root}, which must "
                f"keep {format_bytes(self.min_free_bytes)} free; {fit}")


def parse_bytes(text: str) -> int:
    """'500M' / '2G' / '1.5GiB' / '1000' -> bytes (binary units); ValueError naming the text otherwise."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}.get(t[-1:], 1)
    number = t[:-1] if scale > 1 else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use bytes or a K/M/G/T suffix, e.g. 500M)") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a size: {text!r} (must be a non-negative number)")
    return int(value * scale)
