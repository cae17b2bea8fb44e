"""Segments on disk (real PyAV, real libx264): closed segments decode with the project's readers, and the partial
file of a crashed writer is rescued up to its torn tail."""
from __future__ import annotations

import numpy as np
import pytest

from offline.data.decode import decode_video, probe_video
from streaming.demo_feed import DemoFeed
from streaming.segments import SegmentWriter, partial_path, salvage, segment_index, segment_name


def frames(n: int, size=(96, 128)):
    feed = DemoFeed(seed=2, fps=10, size=size, anomaly_every_s=None)
    return [feed.frame(i) for i in range(n)]


def write(writer: SegmentWriter, images) -> None:
    for rgb in images:
        writer.mux(writer.encode(rgb))


@pytest.mark.parametrize("name, index", [("seg-000001.mkv", 1), (".seg-000042.mkv.partial", 42),
                                         ("seg-1.mp4", None), ("recording.json", None), (".seg-000001.mkv.partial.rescue", None)])
def test_segment_names(name, index):
    assert segment_index(name) == index
    if index is not None:
        assert segment_index(segment_name(index)) == index


def test_a_closed_segment_is_renamed_and_decodes_as_written(tmp_path):
    images = frames(25)
    writer = SegmentWriter(tmp_path, 3, fps=10, width=128, height=96)
    write(writer, images)
    assert writer.path == partial_path(tmp_path, 3) and writer.path.name.startswith(".")  # hidden while open
    seg = writer.close()
    assert seg.file == "seg-000003.mkv" and seg.frames == 25 and seg.seconds == 2.5 and not seg.rescued
    assert not partial_path(tmp_path, 3).exists() and (tmp_path / seg.file).stat().st_size == seg.bytes
    assert probe_video(tmp_path / seg.file) == (25, 10.0)
    decoded = list(decode_video(tmp_path / seg.file, strict=True))
    assert len(decoded) == 25
    mse = np.mean([(a.astype(float) - b) ** 2 for a, b in zip(decoded, images)])
    assert 10 * np.log10(255**2 / mse) > 35  # crf 18: close to the frames given


def test_odd_sides_are_refused(tmp_path):
    with pytest.raises(ValueError, match="even sides"):
        SegmentWriter(tmp_path, 1, fps=10, width=127, height=96)


@pytest.mark.parametrize("cut", [0, 150])
def test_a_crashed_writers_partial_file_is_rescued_up_to_its_torn_tail(tmp_path, cut):
    """What was on disk when the process died: the partial file as flushed, optionally torn mid-packet."""
    writer = SegmentWriter(tmp_path, 1, fps=10, width=128, height=96)
    write(writer, frames(35))
    on_disk = writer.path.read_bytes()  # the crash: nothing after this reaches the file
    writer.abort()
    writer.path.write_bytes(on_disk[: len(on_disk) - cut])
    seg = salvage(writer.path, fps=10)
    assert seg is not None and seg.rescued and seg.file == "seg-000001.mkv"
    assert 20 <= seg.frames <= 35  # clusters of 1 s: at most about the last second is lost
    assert not writer.path.exists()
    assert len(list(decode_video(tmp_path / seg.file, strict=True))) == seg.frames
    assert probe_video(tmp_path / seg.file)[0] == seg.frames


def test_an_unreadable_partial_file_is_removed(tmp_path):
    partial = partial_path(tmp_path, 2)
    partial.write_bytes(b"\x1aE\xdf\xa3 not a matroska file")
    assert salvage(partial, fps=10) is None
    assert list(tmp_path.iterdir()) == []
