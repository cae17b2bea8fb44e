"""`vad record` end to end with real sources: the GStreamer RTSP server (restarted mid-recording, with credentials),
a paced demo feed killed mid-segment, video files; segments read back with the project's readers and `vad train`'s
data loading; resume, refused settings and the disk limit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from offline.cli import main as vad
from offline.data.readers import open_dataset, read_frames
from streaming.disk_limit import tree_bytes
from streaming.recording_dir import MANIFEST
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-pw"


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def segments(out: Path) -> list[Path]:
    return sorted(out.glob("seg-*.mkv"))


def read_all(out: Path) -> dict[str, list[np.ndarray]]:
    """Every clip of the recording through the project's dataset readers (frame counts checked, strict decoding)."""
    dataset = open_dataset(out)
    assert dataset.layout == "videos" and not dataset.test
    return {clip.id: list(read_frames(clip, size=None, strict=True)) for clip in dataset.train}


def spawn(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """`vad ARGS` in its own process (its whole output, logs and progress bar, to `log`)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "offline.cli", *args], cwd=REPO, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)


def no_secret_anywhere(out: Path, *texts: str) -> None:
    """The password is in no file name, no file's bytes (manifest, segments) and none of the given texts."""
    secret = PASSWORD.encode()
    for path in out.rglob("*"):
        assert PASSWORD not in str(path)
        if path.is_file():
            assert secret not in path.read_bytes(), path
    for text in texts:
        assert PASSWORD not in text


@pytest.fixture
def clip(tmp_path) -> Path:
    """12 s of the demo feed at 25 fps, 240x320, as an H.264 file."""
    from streaming.demo_feed import write_demo_video

    path = tmp_path / "clip.mp4"
    write_demo_video(path, 12.0, fps=25, size=(240, 320), seed=1)
    return path


def test_record_rtsp_into_segments_that_the_readers_and_training_data_loading_read(rtsp_server, demo_video, tmp_path, capsys):
    out = tmp_path / "rec"
    rc = vad(["record", rtsp_server.url("demo"), "--minutes", "0.05", "--fps", "10", "--segment-minutes", "0.02",
              "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr()
    assert f"train with: vad train --data {out}" in capsys.readouterr().out
    m = manifest(out)
    assert (m["state"], m["frames"], m["fps"], len(m["segments"])) == ("done", 30, 10.0, 3)  # 3 s at 10 fps, 12 per segment
    clips = read_all(out)
    assert {k: len(v) for k, v in clips.items()} == {"seg-000001": 12, "seg-000002": 12, "seg-000003": 6}
    first = clips["seg-000001"][0]
    assert first.shape == (256, 256, 3)  # full resolution (no --max-side)
    # what the camera served: the demo clip from its first frame (RTSP re-encode + our crf 18 still look alike)
    from offline.data.decode import decode_video

    served = next(decode_video(demo_video[0]))
    mse = np.mean((first.astype(float) - served) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30
    # vad train's own path: data.root -> dataset -> decoded training windows
    from offline.config import load_config
    from offline.data.readers import open_from_config
    from offline.training.data import load_clips

    cfg = load_config(None, {"data.root": str(out), "data.size": 32})
    data = load_clips(open_from_config(cfg.data).train, cfg.data.size, progress=False)
    assert [d.frames.shape for d in data] == [(12, 32, 32, 3), (12, 32, 32, 3), (6, 32, 32, 3)]


@pytest.mark.slow
def test_record_survives_a_server_restart_resumes_with_env_credentials_and_writes_no_secret(
        rtsp_server_factory, demo_video, tmp_path):
    server = rtsp_server_factory({"demo": demo_video[0]}, user=f"admin:{PASSWORD}")
    out, log = tmp_path / "rec", tmp_path / "record.log"
    common = ["--fps", "10", "--segment-minutes", "0.02", "--out", str(out), "--read-timeout", "2", "--camera", "gate"]
    # run 1: credentials in the URL; the server dies and comes back after the first segment
    proc = spawn(["record", server.url("demo"), "--minutes", "0.1", *common], log)
    try:
        wait_for(lambda: (out / ".seg-000002.mkv.partial").exists(), 30, "the first closed segment and a second one")
        server.restart()
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        proc.kill()
    m = manifest(out)
    assert m["state"] == "done" and m["frames"] == 60 and m["reconnects"] >= 1, m
    first_run = {k: len(v) for k, v in read_all(out).items()}  # every segment decodes, counts as listed
    assert sum(first_run.values()) == 60 and len(first_run) >= 6, first_run  # 5 full + the one the restart closed
    assert first_run == {Path(s["file"]).stem: s["frames"] for s in m["segments"]}
    # run 2: the same directory, credentials from the environment only: numbering and seconds continue
    proc = spawn(["record", server.url("demo", credentials=False), "--minutes", "0.15", *common], log,
                 env={"VAD_CAMERA_GATE_USER": "admin", "VAD_CAMERA_GATE_PASSWORD": PASSWORD})
    try:
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        proc.kill()
    m = manifest(out)
    assert m["state"] == "done" and m["frames"] == 90 and m["seconds"] == 9.0
    names = [s.name for s in segments(out)]
    assert names == [f"seg-{i:06d}.mkv" for i in range(1, len(names) + 1)]
    assert len(names) == len(first_run) + 3  # 3 s more in segments of 1.2 s
    assert sum(len(v) for v in read_all(out).values()) == 90
    text = log.read_text()
    assert "***@127.0.0.1" in text and "reconnecting" in text  # the logs did name the camera and the restart
    no_secret_anywhere(out, text, m["source"])


@pytest.mark.slow
def test_a_killed_recording_loses_at_most_its_open_segments_tail(tmp_path):
    """SIGKILL mid-segment (a crash, a power cut): closed segments untouched, the open one rescued by the next run."""
    out, log = tmp_path / "rec", tmp_path / "record.log"
    args = ["record", "demo://street?seed=0&fps=10&size=128&anomaly_every_s=0", "--minutes", "0.15", "--fps", "10",
            "--segment-minutes", "0.05", "--out", str(out), "--no-progress", "--realtime"]
    proc = spawn(args, log)
    try:
        wait_for(lambda: (out / "seg-000001.mkv").exists(), 30, "the first closed segment")
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 2.0, 5, "two seconds into segment 2 (a paced feed)")
        closed = (out / "seg-000001.mkv").read_bytes()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert manifest(out)["state"] == "recording"  # it never got to say otherwise
    assert vad(args) == 0
    m = manifest(out)
    seg1, seg2, *rest = m["segments"]
    assert (out / "seg-000001.mkv").read_bytes() == closed and seg1["frames"] == 30
    assert seg2["rescued"] and 10 <= seg2["frames"] < 30  # about 2 s written, at most ~1 s lost
    assert m["frames"] == 90 and sum(s["frames"] for s in rest) == 90 - 30 - seg2["frames"]
    assert {k: len(v) for k, v in read_all(out).items()} == {Path(s["file"]).stem: s["frames"] for s in m["segments"]}


def test_vad_train_trains_on_a_recording_directory_as_it_is(clip, tmp_path):
    out, run = tmp_path / "rec", tmp_path / "run"
    assert vad(["record", str(clip), "--minutes", "0.12", "--fps", "10", "--segment-minutes", "0.06", "--out", str(out),
                "--no-progress"]) == 0
    assert vad(["train", "--target", "spatial", "--schedule", "tiny", "--data", str(out), "--out", str(run),
                "--set", "train.max_steps=2", "--set", "pa.spatial=none", "--no-progress"]) == 0
    records = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "start" and start["windows"] > 0 and start["holdout_windows"] > 0  # both 36-frame segments
    assert [r["step"] for r in records if r["event"] == "epoch"] == [1, 2]
    assert (run / "weights.safetensors").is_file()


def test_resume_continues_and_a_changed_fps_is_refused(clip, tmp_path, capsys):
    out = tmp_path / "rec"
    base = [str(clip), "--segment-minutes", "0.01", "--out", str(out), "--no-progress", "--max-side", "160"]
    assert vad(["record", *base, "--minutes", "0.02", "--fps", "10"]) == 0
    assert [s["frames"] for s in manifest(out)["segments"]] == [6, 6]
    assert vad(["record", *base, "--minutes", "0.04"]) == 0  # fps as recorded
    m = manifest(out)
    assert [s["file"] for s in m["segments"]] == [f"seg-{i:06d}.mkv" for i in (1, 2, 3, 4)]
    assert m["frames"] == 24 and {(s["width"], s["height"]) for s in m["segments"]} == {(160, 120)}
    assert vad(["record", *base, "--minutes", "0.04"]) == 0  # nothing left to do
    assert manifest(out)["frames"] == 24
    capsys.readouterr()
    assert vad(["record", *base, "--minutes", "0.1", "--fps", "5"]) == 2
    assert "--fps: " in capsys.readouterr().err and manifest(out)["frames"] == 24


def test_a_tiny_disk_limit_is_refused_before_starting(tmp_path, capsys):
    out = tmp_path / "rec"
    rc = vad(["record", "rtsp://cam:pw@127.0.0.1:9/never-contacted", "--minutes", "1", "--out", str(out),
              "--max-bytes", "1000", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: --max-bytes: " in err and "limit (1000 bytes)" in err
    assert not out.exists() and ":pw@" not in err


def test_the_disk_limit_reached_midway_stops_cleanly_and_keeps_closed_segments(clip, tmp_path, capsys):
    out = tmp_path / "rec"
    limit = 300 * 1024
    rc = vad(["record", str(clip), "--minutes", "1", "--fps", "10", "--segment-minutes", "0.02", "--out", str(out),
              "--max-bytes", str(limit), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error: --max-bytes reached: " in err and "(closed segments are kept)" in err
    m = manifest(out)
    assert m["state"] == "failed" and m["error"].startswith("--max-bytes reached") and 0 < m["seconds"] < 12
    assert tree_bytes(out) <= limit  # segments and manifest together
    assert sum(len(v) for v in read_all(out).values()) == m["frames"]
    assert not list(out.glob(".*.partial"))
