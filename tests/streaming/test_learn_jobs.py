"""streaming/learn_jobs.py: learn jobs as real Ray tasks on real footage (vtest segments), swapped in, refused, killed."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from offline.data.decode import decode_video
from offline.data.encode import write_video
from offline.scoring.bundle import load_bundle
from streaming.learn_jobs import JobConflict, LearnConfig, LearnJobs, LearnRequest
from tests.streaming.service_support import ensure_ray, wait_for

RULES = {"min_duration_s": 0.5, "hysteresis": 0.1, "close_after_s": 1.0}
FAST = {"train.epochs": 1, "pa.spatial": "none"}


@pytest.fixture(scope="module")
def recordings(vtest, tmp_path_factory) -> Path:
    """24 s of vtest at 160x120 as 4 recording segments of one camera."""
    root = tmp_path_factory.mktemp("recordings") / "lobby"
    frames = np.stack([f[::4, ::4] for _, f in zip(range(240), decode_video(vtest))])
    for i, part in enumerate(np.array_split(frames, 4)):
        write_video(part, root / f"segment-{i:03d}.mp4", 10.0)
    return root


@pytest.fixture()
def jobs(tmp_path):
    ensure_ray()
    swapped: list[tuple[str, str]] = []
    j = LearnJobs(LearnConfig(bundles_root=tmp_path / "bundles", schedule="tiny", eval_fraction=0.25, num_cpus=1),
                  swap=lambda cam, path: swapped.append((cam, path)), poll_s=0.2)
    j.swapped = swapped
    return j


def finished(jobs: LearnJobs, job_id: str, timeout_s: float = 180.0) -> dict:
    return wait_for(lambda: (j := jobs.get(job_id))["state"] in ("done", "failed") and j, timeout_s, f"job {job_id}")


def test_a_learn_job_trains_reports_and_swaps_in_the_new_bundle(jobs, recordings):
    job = jobs.start("lobby", recordings, LearnRequest(swap=True, max_false_alerts_per_hour=600, overrides=FAST),
                     fps=10.0, rules=RULES)
    assert job["state"] == "queued" and Path(job["bundle"]).parent.name == "lobby"
    with pytest.raises(JobConflict, match="lobby"):  # one learn per camera at a time
        jobs.start("lobby", recordings, LearnRequest(overrides=FAST), fps=10.0, rules=RULES)
    done = finished(jobs, job["id"])
    assert done["state"] == "done", done
    assert done["progress"]["fraction"] == 1.0 and done["progress"]["pid"] != os.getpid()
    assert done["result"]["unseen"]["clips"] == ["segment-003"]
    assert done["result"]["threshold_choice"]["target_per_hour"] == 600
    bundle = load_bundle(done["bundle"])
    assert bundle.config.scoring.alert_threshold == pytest.approx(done["result"]["threshold_choice"]["threshold"])
    assert wait_for(lambda: jobs.get(job["id"])["swapped"], 10, "swap") and jobs.swapped == [("lobby", done["bundle"])]
    assert [j["id"] for j in jobs.list("lobby")] == [job["id"]] and jobs.list("other") == []


def test_a_learn_that_fails_says_why_and_swaps_nothing(jobs, recordings):
    job = jobs.start("lobby", recordings, LearnRequest(swap=True, overrides={"data.size": 8}), fps=10.0, rules=RULES)
    done = finished(jobs, job["id"], 60)
    assert done["state"] == "failed" and "data.size" in done["error"], done
    assert jobs.swapped == [] and not (Path(done["bundle"]) / "config.json").exists()


def test_a_killed_learn_worker_fails_the_job_and_leaves_the_running_bundle(jobs, recordings):
    job = jobs.start("lobby", recordings, LearnRequest(swap=True, overrides={**FAST, "train.epochs": 500}),
                     fps=10.0, rules=RULES)
    running = wait_for(lambda: (j := jobs.get(job["id"]))["progress"].get("stage") == "training" and j, 120, "training")
    os.kill(running["progress"]["pid"], signal.SIGKILL)
    done = finished(jobs, job["id"], 60)
    assert done["state"] == "failed" and "died" in done["error"], done
    assert jobs.swapped == [] and not (Path(done["bundle"]) / "config.json").exists()
    # the camera is free again
    again = jobs.start("lobby", recordings, LearnRequest(overrides={"data.size": 8}), fps=10.0, rules=RULES)
    assert finished(jobs, again["id"], 60)["state"] == "failed"


def test_schedule_auto_is_the_gpu_schedule_only_where_jobs_get_a_gpu():
    cpu, gpu = LearnJobs(LearnConfig()), LearnJobs(LearnConfig(num_gpus=1))
    assert (cpu.schedule(LearnRequest()), gpu.schedule(LearnRequest())) == ("cpu", "paper")
    assert gpu.schedule(LearnRequest(schedule="tiny")) == "tiny"
    assert LearnJobs(LearnConfig(schedule="tiny")).schedule(LearnRequest(schedule="auto")) == "cpu"


def test_the_flow_ae_is_the_requests_choice_else_the_services():
    on, off = LearnJobs(LearnConfig()), LearnJobs(LearnConfig(temporal=False))  # learned by default
    assert (on.temporal(LearnRequest()), off.temporal(LearnRequest())) == (True, False)
    assert (on.temporal(LearnRequest(temporal=False)), off.temporal(LearnRequest(temporal=True))) == (False, True)
    with pytest.raises(ValueError, match="temporal"):
        LearnRequest(temporal="sometimes")


def test_a_request_may_not_choose_paths():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="data.root"):
        LearnRequest(overrides={"data.root": "/etc"})
    with pytest.raises(ValidationError, match="train.out_dir"):
        LearnRequest(overrides={"train.epochs": 1, "train.out_dir": "/tmp/x"})


def test_no_recordings_is_refused_naming_the_folder(jobs, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        jobs.start("lobby", tmp_path / "none", LearnRequest(), fps=10.0, rules=RULES)


def test_vad_learn_camera_reads_its_recordings_and_rules_from_the_service_config(recordings, tmp_path, capsys):
    import yaml

    from offline.cli import main as vad

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "cameras": [{"name": "lobby", "url": "demo://street", "fps": 10, "min_duration_s": 1.0}],
        "alerts": {"max_false_alerts_per_hour": 120},
        "scorer": {"bundle": str(tmp_path / "bundles" / "default"), "build_demo_bundle": False},
        "recordings": {"root": str(recordings.parent)},
        "learn": {"temporal": False},  # the service's choice reaches `vad learn --camera`
    }))
    assert vad(["learn", "--camera", "nobody", "--config", str(config)]) == 2
    assert "no camera named 'nobody'" in capsys.readouterr().err
    code = vad(["learn", "--camera", "lobby", "--config", str(config), "--schedule", "tiny", "--no-progress",
                "--set", "train.epochs=1", "--set", "pa.spatial=none"])
    assert code == 0
    out = capsys.readouterr().out
    bundle = Path(out.split('"path": "')[1].split('"')[0])
    assert bundle.parent == tmp_path / "bundles" / "learned" / "lobby"  # inside scorer.bundle_roots: swappable
    report = json.loads((bundle / "learn.json").read_text())
    assert report["replay_fps"] == 10 and report["rules"]["min_duration_s"] == 1.0
    assert report["threshold_choice"]["target_per_hour"] == 120
    assert report["temporal"] is None and load_bundle(bundle).temporal is None
    assert "PUT 127.0.0.1:8000/cameras/lobby/bundle" in out
