"""Recorded footage on disk: H.264 segments in Matroska, each playable once closed, and the rescue of a crashed one.

A segment is written to a hidden partial file (`.seg-000001.mkv.partial`: the dataset readers skip dot-files) and
renamed to `seg-000001.mkv` when closed, so every visible segment is complete. The partial file gets one Matroska
cluster per second, flushed packet by packet, so after a crash `salvage` re-muxes what reached the disk (all but
about the last second) into a closed segment.

Why H.264 in Matroska: libx264 ships in PyAV's wheels and decodes back with the project's readers
(offline.data.decode); Matroska, unlike MP4, needs no index written at the end to be read, so a partial file is
rescued by a plain re-mux; `tune=zerolatency` hands out each frame's packet at once (no frames held in the encoder).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

SUFFIX = ".mkv"
PARTIAL = ".partial"
CONTAINER_OPTIONS = {"flush_packets": "1", "cluster_time_limit": "1000"}  # ms: a crash loses at most ~1 s
PRESET = "veryfast"
KEYFRAME_S = 2.0  # a keyframe every 2 s: a rescued partial file decodes from its first cluster on


@dataclass(frozen=True)
class Segment:
    """A closed segment: its file name (in the recording directory), frames, seconds at the recording's fps, size."""

    file: str
    frames: int
    seconds: float
    bytes: int
    width: int
    height: int
    rescued: bool = False  # re-muxed from the partial file of a crashed run

    def as_dict(self) -> dict:
        """The manifest's entry of this segment."""
        return asdict(self)


def segment_name(index: int) -> str:
    """`seg-000001.mkv` for index 1."""
    return f"seg-{index:06d}{SUFFIX}"


def segment_index(name: str) -> int | None:
    """1 for `seg-000001.mkv` or its partial file `.seg-000001.mkv.partial`; None for any other name."""
    stem = name.removeprefix(".").removesuffix(PARTIAL)
    if not (stem.startswith("seg-") and stem.endswith(SUFFIX)):
        return None
    digits = stem[4 : -len(SUFFIX)]
    return int(digits) if digits.isdigit() else None


def partial_path(directory: Path, index: int) -> Path:
    """Where segment `index` is written while open (hidden from the dataset readers)."""
    return directory / f".{segment_name(index)}{PARTIAL}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finalize(partial: Path, final: Path) -> None:
    """Make a written file durable and visible under its final name (fsync, atomic rename, fsync the directory)."""
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, final)
    _fsync_dir(final.parent)


class SegmentWriter:
    """One open segment: `encode` an RGB frame into packets, `mux` them (the caller may first check their size
    against a disk limit), `close` to finalize it into a playable `Segment`.

    Args:
        directory: the recording directory; index: the segment's number (file seg-<index>.mkv).
        fps: frames per second of the recording (constant: frame n is at n / fps).
        width, height: frame size, both even (H.264 in yuv420p).
        crf: x264 constant rate factor (0 lossless ... 51 worst; 18 is visually near lossless).
    """

    def __init__(self, directory: Path, index: int, fps: float, width: int, height: int, crf: int = 18):
        if width % 2 or height % 2:
            raise ValueError(f"segment frames must have even sides (yuv420p), got {width}x{height}")
        self.directory = Path(directory)
        self.index = index
        self.fps = fps
        self.width, self.height = width, height
        self.path = partial_path(self.directory, index)
        self.frames = 0  # frames written (muxed)
        self._pts = 0  # frames encoded
        self.muxed_bytes = 0
        self._container = av.open(str(self.path), "w", format="matroska", options=CONTAINER_OPTIONS)
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(
            "libx264",
            rate=rate,
            options={"crf": str(crf), "preset": PRESET, "tune": "zerolatency",
                     "g": str(max(1, round(KEYFRAME_S * fps))), "bf": "0"},
        )
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._time_base = Fraction(1) / rate

    def encode(self, rgb: np.ndarray) -> list:
        """Encode one (H, W, 3) uint8 frame of this segment's size; returns its packets (not yet written)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += 1
        return list(self._stream.encode(frame))

    def mux(self, packets: list) -> None:
        """Write the packets `encode` gave for one frame to the partial file (counted as one frame)."""
        self._write(packets)
        self.frames += 1

    def _write(self, packets: list) -> None:
        for packet in packets:
            self.muxed_bytes += packet.size
            self._container.mux(packet)

    def close(self) -> Segment:
        """Flush the encoder, write the index, and rename the partial file to its final name: playable from now."""
        self._write(list(self._stream.encode()))
        self._container.close()
        final = self.directory / segment_name(self.index)
        _finalize(self.path, final)
        return Segment(final.name, self.frames, round(self.frames / self.fps, 3), final.stat().st_size,
                       self.width, self.height)

    def abort(self) -> None:
        """Close the container after a write error, leaving the partial file for `salvage` (best effort)."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is already broken; salvage takes what is readable
            pass


def _remux(partial: Path, out_path: Path, limit: int | None = None) -> tuple[int, int, int]:
    """Copy the readable packets (at most `limit`) of `partial` into a closed Matroska file: (packets, width, height)."""
    packets = 0
    with av.open(str(partial)) as src:
        source = src.streams.video[0]
        width, height = source.codec_context.width, source.codec_context.height
        with av.open(str(out_path), "w", format="matroska") as out:
            target = out.add_stream_from_template(source)
            try:
                for packet in src.demux(source):
                    if limit is not None and packets >= limit:
                        break
                    if packet.dts is None or packet.size == 0:
                        continue
                    packet.stream = target
                    out.mux(packet)
                    packets += 1
            except (av.error.FFmpegError, OSError) as exc:  # the torn end of the file
                logger.info("%s: readable up to packet %d (%s)", partial.name, packets, exc)
    return packets, width, height


def salvage(partial: Path, fps: float) -> Segment | None:
    """Re-mux the readable packets of a crashed run's partial file into a closed segment (the torn tail is
    dropped, and so is any frame that does not decode); None, and the partial file removed, when nothing is left."""
    from offline.data.clips import DataError
    from offline.data.decode import decode_video

    index = segment_index(partial.name)
    final = partial.with_name(segment_name(index if index is not None else 0))
    tmp = partial.with_name(partial.name + ".rescue")
    try:
        packets, width, height = _remux(partial, tmp)
        decoded = 0
        try:
            for _ in decode_video(tmp, strict=True):  # the project's reader must read every frame kept
                decoded += 1
        except DataError:
            packets, width, height = _remux(partial, tmp, limit=decoded)
        frames = min(packets, decoded)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        logger.warning("%s: nothing to rescue (%s: %s); removed", partial.name, type(exc).__name__, exc)
        frames = 0
    if frames == 0:
        tmp.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
        return None
    _finalize(tmp, final)
    partial.unlink(missing_ok=True)
    logger.warning("%s: rescued %d frames of a crashed run into %s", partial.name, frames, final.name)
    return Segment(final.name, frames, round(frames / fps, 3), final.stat().st_size, width, height, rescued=True)
