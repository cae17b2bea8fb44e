"""A recording directory's manifest: defaults, settings a resume may not change, and the disk winning over it."""
from __future__ import annotations

import json

import pytest

from streaming.demo_feed import DemoFeed
from streaming.recording_dir import MANIFEST, RecordingDirError, open_dir
from streaming.segments import SegmentWriter, partial_path


def segment(directory, index, n=12):
    feed = DemoFeed(seed=0, fps=10, size=(64, 96), anomaly_every_s=None)
    writer = SegmentWriter(directory, index, fps=10, width=96, height=64)
    for i in range(n):
        writer.mux(writer.encode(feed.frame(i)))
    return writer


def test_a_new_directory_takes_the_defaults(tmp_path):
    rec = open_dir(tmp_path / "new", fps=None, max_side=None, default_fps=5.0)
    assert (rec.fps, rec.max_side, rec.segments, rec.next_index()) == (5.0, None, [], 1)


def test_a_resume_keeps_the_recorded_settings_and_refuses_others_naming_the_option(tmp_path):
    rec = open_dir(tmp_path, fps=10, max_side=480)
    rec.segments.append(segment(tmp_path, 1).close())
    rec.source = "rtsp://admin:pw@cam/x"
    rec.save()
    again = open_dir(tmp_path, fps=None, max_side=None)
    assert (again.fps, again.max_side, again.frames, again.next_index()) == (10.0, 480, 12, 2)
    assert json.loads((tmp_path / MANIFEST).read_text())["source"] == "rtsp://***@cam/x"
    with pytest.raises(RecordingDirError, match=r"^--fps: .* recorded at 10 fps"):
        open_dir(tmp_path, fps=5, max_side=None, fps_name="--fps")
    with pytest.raises(RecordingDirError, match=r"^--max-side: .* capped at 480"):
        open_dir(tmp_path, fps=None, max_side=0, max_side_name="--max-side")


def test_the_disk_wins_unlisted_segments_counted_missing_dropped_partials_rescued(tmp_path):
    rec = open_dir(tmp_path, fps=10, max_side=None)
    rec.segments += [segment(tmp_path, 1).close(), segment(tmp_path, 2).close()]
    rec.save()
    segment(tmp_path, 3).close()  # closed, then a crash before the manifest was written
    (tmp_path / "seg-000001.mkv").unlink()  # removed by hand
    crashed = segment(tmp_path, 4, n=25)
    on_disk = crashed.path.read_bytes()
    crashed.abort()
    partial_path(tmp_path, 4).write_bytes(on_disk)
    again = open_dir(tmp_path, fps=10, max_side=None)
    assert [s.file for s in again.segments] == ["seg-000002.mkv", "seg-000003.mkv", "seg-000004.mkv"]
    assert again.segments[1].frames == 12 and again.segments[2].rescued and again.segments[2].frames >= 10
    assert again.next_index() == 5
    listed = json.loads((tmp_path / MANIFEST).read_text())["segments"]
    assert [s["file"] for s in listed] == ["seg-000002.mkv", "seg-000003.mkv", "seg-000004.mkv"]


def test_segments_without_a_manifest_are_refused(tmp_path):
    segment(tmp_path, 1).close()
    with pytest.raises(RecordingDirError, match="no recording.json"):
        open_dir(tmp_path, fps=10, max_side=None)
