"""The recording disk limit: sizes, the refusal before starting (naming the limit), the stop when the room is used."""
from __future__ import annotations

import pytest

from streaming.disk_limit import MIN_ROOM, PACKET_OVERHEAD, SEGMENT_RESERVE, DiskLimit, DiskLimitError, parse_bytes, tree_bytes


@pytest.mark.parametrize("text, value", [("1000", 1000), ("500K", 500 * 1024), ("2G", 2 * 1024**3), ("1.5GiB", int(1.5 * 1024**3)),
                                         ("20MB", 20 * 1024**2), ("0", 0)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "ten", "-1G", "inf", "5X"])
def test_parse_bytes_refuses(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes(text)


def test_tree_bytes_counts_nested_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1" * 100)
    (tmp_path / "y").write_bytes(b"1" * 23)
    assert tree_bytes(tmp_path) == 123
    assert tree_bytes(tmp_path / "missing") == 0


def test_no_room_to_start_names_the_byte_limit(tmp_path):
    (tmp_path / "old.mkv").write_bytes(b"0" * 5000)
    limit = DiskLimit(tmp_path, max_bytes=MIN_ROOM, min_free_bytes=0, names=("recordings.max_bytes", "recordings.min_free_bytes"))
    with pytest.raises(DiskLimitError, match=r"^recordings\.max_bytes: .* already holds 4\.9 KiB"):
        limit.start()


def test_no_free_space_to_start_names_the_margin(tmp_path):
    limit = DiskLimit(tmp_path / "new", max_bytes=None, min_free_bytes=2**62, names=("--max-bytes", "--min-free"))
    with pytest.raises(DiskLimitError, match=r"^--min-free: the disk holding .* must keep"):
        limit.start()


def test_allow_counts_down_to_the_limit_then_refuses(tmp_path):
    """Bytes allowed are written (as a recorder does); the refusal comes when the limit less the reserve is used."""
    limit = DiskLimit(tmp_path, max_bytes=MIN_ROOM + 10_000, min_free_bytes=0, names=("--max-bytes", "--min-free"))
    limit.start()
    room = MIN_ROOM + 10_000 - SEGMENT_RESERVE
    allowed = 0
    with (tmp_path / "seg").open("wb", buffering=0) as f:
        while limit.allow(1000):
            f.write(b"x" * 1000)
            allowed += 1
            assert allowed <= room // 1000
    assert allowed >= room // (1000 + PACKET_OVERHEAD)
    assert limit.reached().startswith("--max-bytes reached")
    assert tree_bytes(tmp_path) + SEGMENT_RESERVE <= limit.max_bytes
