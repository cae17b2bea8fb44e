"""Fault-suite fixtures: damaged media, the real RTSP server (from tests/streaming), and a log witness.

Every test module in tests/faults sets `pytestmark = pytest.mark.slow` (CI runs slow tests). The `log_witness` session fixture captures every log record
the suite produces; its teardown fails the run if a test credential appears in any of them or in any log file
of the suite's Ray session (actors' stdout/stderr, raylet, GCS, Serve).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.faults.tools import media
from tests.faults.tools.watch import find_secrets
from tests.streaming.conftest import demo_video, gst_available, rtsp_server_factory  # noqa: F401 - fixtures

FAULT_CLIP_SECONDS = 12.0


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a witness must never break the code under test
            self.lines.append(str(record.msg))


@pytest.fixture(scope="session", autouse=True)
def log_witness():
    """Captures all log records (DEBUG and up) of the suite; fails at the end if a credential leaked."""
    handler = _Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)
    leaked = find_secrets("\n".join(handler.lines))
    assert not leaked, f"credentials {leaked} appeared in the suite's log output"
    hits = _ray_log_hits()
    assert not hits, f"credentials in Ray's log files of the suite: {hits}"


def _ray_log_hits() -> list[str]:
    """Files of this session's Ray logs (every actor's stdout/stderr, raylet, GCS, Serve) holding a credential."""
    try:
        import ray

        if not ray.is_initialized():
            return []
        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    except Exception:  # noqa: BLE001 - Ray not used by the tests that ran
        return []
    hits = []
    for f in logs.rglob("*"):
        if f.is_file() and f.stat().st_size < 50_000_000 and find_secrets(f.read_text(errors="replace")):
            hits.append(f.name)
    return hits


@pytest.fixture(scope="session")
def fault_media(tmp_path_factory, demo_video) -> dict[str, Path]:
    """Damaged and odd files made from the demo feed: clean, corrupt, truncated (MKV and MP4), resolution change."""
    from streaming.demo_feed import write_demo_video

    d = tmp_path_factory.mktemp("fault_media")
    clean = d / "clean.mkv"
    write_demo_video(clean, FAULT_CLIP_SECONDS, fps=25, size=256, seed=1, anomaly_every_s=None)
    clean_mp4 = d / "clean.mp4"
    write_demo_video(clean_mp4, 4.0, fps=25, size=256, seed=1, anomaly_every_s=None)
    out = {"clean": clean, "demo": demo_video[0]}
    out["corrupt"] = d / "corrupt.mkv"
    out["corrupt_counts"] = media.corrupt_h264(clean, out["corrupt"], fraction=0.3, seed=3)  # type: ignore[assignment]
    out["truncated"] = d / "truncated.mkv"
    media.truncate_file(clean, out["truncated"], 0.5)
    out["truncated_mp4"] = d / "truncated.mp4"  # moov atom lost: the file cannot be opened at all
    media.truncate_file(clean_mp4, out["truncated_mp4"], 0.5)
    out["resolution"] = d / "resolution.h264"
    out["resolution_parts"] = media.resolution_change_h264(out["resolution"])  # type: ignore[assignment]
    return out
