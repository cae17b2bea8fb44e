"""Fault-injection benchmark: run the fault suite's scenarios once each and print one table.

    .venv/bin/python -m bench.faults [--only NAME ...] [--json out.json]     # from the repository root

Run as a module from the checkout's root so that `tests` (the fault suite's injectors) imports without a
sys.path edit.

Rows marked "service" run against the real service (Ray Serve app on one local Ray, camera and scorer actors,
SQLite events; scenario 6 as two `serve run` processes in a private network namespace), the others at the
ingest loop / event store level.

Columns: scenario, faults injected, recovered (yes/no/held: a clean error state that keeps retrying),
time to recover (s: from the end of the fault to frames flowing again), frames lost beyond the outage itself
(analysis frames that the recovery delay cost, or frames missing from a damaged stream's readable part), and
events lost (committed alert events missing afterwards). Uses the same injectors as tests/faults (a real
GStreamer RTSP server on 127.0.0.1, a loopback stall/cut proxy, damaged files); nothing leaves loopback.

Over 350 lines: one function per scenario of the table. (Sharing the scenario bodies with tests/faults is open work.)
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from streaming.config import CameraConfig
from streaming.ingest import IngestLoop, IngestSettings
from tests.faults.tools import media
from tests.faults.tools.net import FaultProxy, closed_port
from tests.faults.tools.watch import CAM_PASSWORD, CAM_USER, WRONG_PASSWORD, StateRecorder, find_secrets
from tests.polling import wait_for
from tests.streaming.rtsp_server import RtspServer

ANALYSIS_FPS = 5.0
OUTAGE_S = 10.0


def settings_for(name: str, url: str, **overrides) -> IngestSettings:
    """IngestSettings as the camera actor derives them from a default CameraConfig (64x64, 4-frame windows)."""
    return IngestSettings.for_camera(CameraConfig(name=name, url=url, fps=ANALYSIS_FPS, **overrides), size=64, window=4)


class Media:
    """Files every scenario serves, made once in a temporary folder."""

    def __init__(self, root: Path):
        from streaming.demo_feed import write_demo_video

        self.clean = root / "clean.mkv"
        write_demo_video(self.clean, 60.0, fps=25, size=256, seed=1, anomaly_every_s=None)
        short = root / "short.mkv"
        write_demo_video(short, 12.0, fps=25, size=256, seed=2, anomaly_every_s=None)
        self.corrupt = root / "corrupt.mkv"
        self.corrupt_counts = media.corrupt_h264(short, self.corrupt, fraction=0.3, seed=3)
        self.truncated = root / "truncated.mkv"
        media.truncate_file(short, self.truncated, 0.5)
        self.resolution = root / "resolution.h264"
        media.resolution_change_h264(self.resolution)


def row(scenario: str, faults: str, recovered: str, recover_s: float | None, frames_lost: int | str,
        events_lost: int | str = "n/a", note: str = "") -> dict:
    return {"scenario": scenario, "faults": faults, "recovered": recovered,
            "recover_s": None if recover_s is None else round(recover_s, 2),
            "frames_lost": frames_lost, "events_lost": events_lost, "note": note}


# ------------------------------------------------------------------------------------------------ scenarios
def s1_server_restart(m: Media) -> dict:
    victim = RtspServer({"cam": m.clean}).start()
    other = RtspServer({"cam": m.clean}).start()
    rec = StateRecorder()
    gaps: list[float] = []
    last = [time.monotonic()]

    def on_b(_w) -> bool:
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now
        return True

    a = IngestLoop("victim", victim.url("cam"), settings_for("victim", victim.url("cam")), on_state=rec).start()
    b = IngestLoop("bystander", other.url("cam"), settings_for("bystander", other.url("cam")), on_window=on_b).start()
    try:
        rec.wait("streaming", 15)
        wait_for(lambda: gaps, 15, "bystander windows")
        gaps.clear()
        r0 = a.counters.reconnects
        t_kill = time.monotonic()
        victim.stop()
        wait_for(lambda: time.monotonic() - t_kill >= OUTAGE_S, OUTAGE_S + 1, "outage", every_s=0.2)
        victim.start()
        t_back = time.monotonic()
        t_stream, _, _ = rec.wait("streaming", 60, after=t_back)
        reconnects = a.counters.reconnects - r0
    finally:
        a.stop(), b.stop(), victim.stop(), other.stop()
    recover = t_stream - t_back
    ok = recover <= 5.0 and max(gaps) < 3.0
    return row("1 RTSP server killed, back after 10 s", "server SIGTERM, 10 s outage", "yes" if ok else "no", recover,
               int(round(recover * ANALYSIS_FPS)),
               note=f"{reconnects} reconnect attempts, delays {rec.retry_delays()}; bystander max window gap {max(gaps):.2f}s")


def s2_stall_open(m: Media) -> dict:
    with FaultProxy(None) as stall:
        rec = StateRecorder()
        s = settings_for("stall0", stall.url("cam"), open_timeout_s=3.0, read_timeout_s=2.0)
        t0 = time.monotonic()
        loop = IngestLoop("stall0", stall.url("cam"), s, on_state=rec).start()
        t_rc, _, _ = rec.wait("reconnecting", 10)
        t_stop = time.monotonic()
        stopped = loop.stop()
        stop_s = time.monotonic() - t_stop
    return row("2 stall before the first byte", "server accepts, sends nothing", "held" if stopped else "no",
               None, "n/a", note=f"open timeout fired after {t_rc - t0:.2f}s (bound 3.0 s); stop() took {stop_s:.2f}s, "
               f"thread ended: {stopped}")


def s2_stall_midstream(m: Media) -> dict:
    server = RtspServer({"cam": m.clean}).start()
    proxy = FaultProxy(server.port)
    rec = StateRecorder()
    s = settings_for("stall1", proxy.url("cam"), open_timeout_s=3.0, read_timeout_s=2.0)
    loop = IngestLoop("stall1", proxy.url("cam"), s, on_state=rec).start()
    try:
        rec.wait("streaming", 15)
        wait_for(lambda: loop.counters.windows_emitted > 0, 10, "windows")
        t_stall = time.monotonic()
        proxy.stall()
        t_rc, _, _ = rec.wait("reconnecting", 10, after=t_stall)
        wait_for(lambda: time.monotonic() - t_stall >= 8.0, 9, "8 s stall", every_s=0.2)
        proxy.resume()
        t_resume = time.monotonic()
        t_stream, _, _ = rec.wait("streaming", 20, after=t_resume)
    finally:
        stopped = loop.stop()
        proxy.close()
        server.stop()
    recover = t_stream - t_resume
    return row("2 stall mid-stream (8 s)", "proxy stops forwarding", "yes" if stopped and recover <= 5 else "no", recover,
               int(round(recover * ANALYSIS_FPS)),
               note=f"read timeout (2.0 s) fired after {t_rc - t_stall:.2f}s; no thread left: {stopped}")


def _run_until(loop: IngestLoop, seconds: float) -> None:
    loop.start()
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= seconds, seconds + 1, "run", every_s=0.2)


def s3_corrupt_rtsp(m: Media) -> dict:
    server = RtspServer({"bad": m.corrupt}).start()
    rec = StateRecorder()
    s = settings_for("corrupt", server.url("bad"))
    s.fps = None
    loop = IngestLoop("corrupt", server.url("bad"), s, on_state=rec)
    try:
        _run_until(loop, 10.0)
        c = loop.stats()
        alive = loop.running
    finally:
        loop.stop()
        server.stop()
    rec.wait("streaming", 0)
    return row("3 corrupt H.264 over RTSP", f"{m.corrupt_counts['flipped_bytes']} bytes flipped in "
               f"{m.corrupt_counts['damaged_packets']}/{m.corrupt_counts['packets']} packets",
               "yes" if alive and "error" not in rec.states() else "no", 0.0, "0 skipped",
               note=f"{c['frames_decoded']} frames decoded (concealed), {c['corrupt_frames']} flagged corrupt; "
               f"reconnects {c['reconnects']}")


def s3_truncated(m: Media) -> dict:
    readable = len(media.frame_shapes(m.truncated))
    rec = StateRecorder()
    s = settings_for("trunc", str(m.truncated))
    s.fps, s.loop_files, s.realtime_files = None, False, False
    loop = IngestLoop("trunc", str(m.truncated), s, on_state=rec)
    loop.run()
    lost = readable - loop.counters.frames_decoded
    return row("3 truncated file", "file cut at 50 % mid-packet", "yes" if rec.states()[-1] == "stopped" else "no", 0.0,
               lost, note=f"{loop.counters.frames_decoded}/{readable} readable frames decoded, ended cleanly")


def s3_resolution(m: Media) -> dict:
    shapes = media.frame_shapes(m.resolution)
    s = settings_for("res", str(m.resolution))
    s.fps, s.loop_files, s.realtime_files = None, False, False
    seen = set()
    loop = IngestLoop("res", str(m.resolution), s, on_window=lambda w: seen.add(w.frames.shape) or True)
    loop.run()
    return row("3 resolution change mid-stream", "320x240 -> 176x144 -> 320x240", "yes" if seen == {(4, 64, 64, 3)} else "no",
               0.0, len(shapes) - loop.counters.frames_decoded, note=f"all frames resized to 64x64: {sorted(seen)}")


def _held_error(name: str, url: str, faults: str, label: str, server: RtspServer | None = None) -> dict:
    rec = StateRecorder()
    records: list[str] = []

    class H(logging.Handler):
        def emit(self, r):
            records.append(r.getMessage())

    h = H()
    logging.getLogger().addHandler(h)
    loop = IngestLoop(name, url, settings_for(name, url), on_state=rec).start()
    try:
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 10.0, 11, "10 s", every_s=0.2)
        stats = loop.stats()
    finally:
        loop.stop()
        logging.getLogger().removeHandler(h)
        if server:
            server.stop()
    leaked = find_secrets("\n".join(records + [rec.text(), repr(stats)]))
    return row(label, faults, "held" if stats["state"] == "reconnecting" and not leaked else "no", None, "n/a",
               note=f"{stats['reconnects']} attempts in 10 s (delays {rec.retry_delays()}); error: {stats['last_error']}; "
               f"credentials leaked: {leaked or 'none'}")


def s4_wrong_credentials(m: Media) -> dict:
    server = RtspServer({"cam": m.clean}, user=f"{CAM_USER}:{CAM_PASSWORD}").start()
    url = f"rtsp://{CAM_USER}:{WRONG_PASSWORD}@127.0.0.1:{server.port}/cam"
    return _held_error("auth", url, "wrong password (RTSP basic auth)", "4 wrong credentials", server)


def s4_unreachable(m: Media) -> dict:
    url = f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:{closed_port()}/cam"
    return _held_error("unreach", url, "connection refused (closed port)", "4 unreachable host")


def s6_store_kill(m: Media) -> dict:
    from tests.faults.test_event_store_crash import _run_writer

    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "events.db"
        committed: dict[int, str] = {}
        for i in range(3):
            committed.update(_run_writer(db, f"cam{i}", 80, signal.SIGKILL))
        with sqlite3.connect(db) as c:
            ok = c.execute("PRAGMA integrity_check").fetchone()[0]
            ids = {r[0] for r in c.execute("SELECT id FROM events")}
    lost = len(set(committed) - ids)
    return row("6 event writer SIGKILLed x3", "SIGKILL mid-write, 3 times", "yes" if ok == "ok" and not lost else "no",
               None, "n/a", lost, note=f"{len(committed)} committed events checked; integrity_check: {ok}")


def s8_bad_config(m: Media) -> dict:
    import copy

    import yaml

    from offline.config import ConfigError
    from streaming.config import load_service_config
    from tests.faults.test_bad_config import CASES, SHIPPED

    base = yaml.safe_load(SHIPPED.read_text())
    named = 0
    with tempfile.TemporaryDirectory() as d:
        for case_id, mutate, field, _bad in CASES:
            cfg = copy.deepcopy(base)
            mutate(cfg)
            p = Path(d) / f"{case_id}.yaml"
            p.write_text(yaml.safe_dump(cfg))
            try:
                load_service_config(p)
            except ConfigError as e:
                named += field in str(e) and not find_secrets(str(e))
    return row("8 malformed deploy/config.yaml", f"{len(CASES)} variants", "yes" if named == len(CASES) else "no", None,
               "n/a", note=f"{named}/{len(CASES)} refused naming the field, no credential echoed")


# ------------------------------------------------------------------------------------ service-level rows
class ServiceUnderTest:
    """The fault suite's service app (tests/faults/test_service_faults.py), started once for these rows."""

    _instance: "ServiceUnderTest | None" = None

    def __init__(self, m: Media):
        import requests
        from ray import serve

        from offline.scoring.bundle import random_bundle
        from streaming.app import build_app
        from tests.faults.tools.watch import API_TOKEN
        from tests.streaming.service_support import SERVE_PORT, ensure_ray

        self.root = Path(tempfile.mkdtemp(prefix="vad-faults-"))
        self.bundle_a = random_bundle(self.root / "a", size=64, temporal=False, channels=(8, 16, 32))
        self.bundle_b = random_bundle(self.root / "b", size=64, temporal=False, channels=(8, 16, 32), seed=1)
        self.bystander_server = RtspServer({"cam": m.clean}).start()
        args = {
            "cameras": [
                {"name": "alerting", "url": "demo://street?seed=0&fps=10&size=64", "fps": 5, "threshold": 0.0,
                 "min_duration_s": 0.0},
                {"name": "bystander", "url": self.bystander_server.url("cam"), "fps": 5},
            ],
            "scorer": {"bundle": str(self.bundle_a), "build_demo_bundle": False, "devices": ["cpu"], "max_batch": 4,
                       "max_wait_ms": 1500, "torch_threads": 1, "num_cpus": 0.25},
            "events": {"path": str(self.root / "events.db")},
            "http": {"host": "127.0.0.1", "port": SERVE_PORT, "token": API_TOKEN},
        }
        ensure_ray()
        serve.run(build_app(args), name="bench", route_prefix="/bench")
        self.base = f"http://127.0.0.1:{SERVE_PORT}/bench"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {API_TOKEN}"
        wait_for(lambda: self.camera("alerting")["windows_scored"] >= 1, 120, "first scores", every_s=0.5)

    @classmethod
    def get_or_start(cls, m: Media) -> "ServiceUnderTest":
        if cls._instance is None:
            cls._instance = ServiceUnderTest(m)
        return cls._instance

    def get(self, path: str):
        return self.session.get(self.base + path, timeout=30)

    def camera(self, name: str) -> dict:
        return self.get(f"/cameras/{name}").json()

    def open_events(self) -> list[dict]:
        return [e for e in self.get("/events?camera=alerting&limit=1000").json() if e["status"] == "open"]


def _reconnects(text: str, camera: str) -> float:
    series = f'vad_reconnects_total{{camera="{camera}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)), 0.0)


def s1_service_server_restart(m: Media) -> dict:
    svc = ServiceUnderTest.get_or_start(m)
    server = RtspServer({"cam": m.clean}).start()
    body = {"name": "victim", "url": server.url("cam"), "fps": ANALYSIS_FPS, "read_timeout_s": 2, "open_timeout_s": 3}
    assert svc.session.post(svc.base + "/cameras", json=body, timeout=60).status_code == 201
    try:
        wait_for(lambda: svc.camera("victim")["state"] == "streaming", 60, "victim streaming", every_s=0.3)
        r0 = _reconnects(svc.get("/metrics").text, "victim")
        delays, bystander = [], []
        t_kill = time.monotonic()
        server.stop()
        while time.monotonic() - t_kill < OUTAGE_S:
            cams = {c["name"]: c for c in svc.get("/cameras").json()}
            d = cams["victim"]["retry_in_s"]
            if d is not None and (not delays or delays[-1] != d):
                delays.append(d)
            bystander.append((time.monotonic(), cams["bystander"]["frames_decoded"]))
            time.sleep(0.3)
        server.start()
        t_back = time.monotonic()
        wait_for(lambda: svc.camera("victim")["state"] == "streaming", 60, "victim back", every_s=0.1)
        recover = time.monotonic() - t_back
        r1 = _reconnects(svc.get("/metrics").text, "victim")
    finally:
        server.stop()
        svc.session.delete(svc.base + "/cameras/victim", timeout=60)
    gaps, last_t, last_n = [0.0], bystander[0][0], bystander[0][1]
    for t, n in bystander[1:]:
        if n > last_n:
            gaps.append(t - last_t)
            last_t, last_n = t, n
    ok = recover <= 5.0 and r1 > r0 and max(gaps) < 3.0
    return row("1 service: RTSP server killed, back after 10 s", "server SIGTERM, 10 s outage", "yes" if ok else "no",
               recover, int(round(recover * ANALYSIS_FPS)),
               note=f"/cameras: reconnecting, retry_in_s {delays}; vad_reconnects_total {r0:.0f} -> {r1:.0f}; "
               f"bystander camera max gap between decoded-frame increments {max(gaps):.2f}s")


def s9_service_hot_swap(m: Media) -> dict:
    from tests.faults.test_bundle_swap import REFUSED, damaged_bundle

    svc = ServiceUnderTest.get_or_start(m)
    a = svc.get("/bundle").json()
    refused = 0
    for kind, _, text in REFUSED:
        bad = damaged_bundle(kind, svc.bundle_b, svc.root)
        r = svc.session.put(svc.base + "/bundle", json={"path": str(bad)}, timeout=120)
        refused += r.status_code == 422 and text in r.text and svc.get("/bundle").json()["sha256"] == a["sha256"]
    n0 = svc.camera("alerting")["frames_scored"]
    t0 = time.monotonic()
    r = svc.session.put(svc.base + "/bundle", json={"path": str(svc.bundle_b)}, timeout=120)
    swap_s = time.monotonic() - t0
    b = r.json()
    wait_for(lambda: (c := svc.camera("alerting"))["frames_scored"] > n0 and c["bundle"]["sha256"] == b["sha256"], 60,
             "scores with B", every_s=0.2)
    first_b = time.monotonic() - t0
    ok = r.status_code == 200 and refused == len(REFUSED)
    return row("9 service: bundle hot-swap + 5 refused bundles", f"PUT /bundle x{len(REFUSED) + 1}: checksum, version, "
               "pickle as safetensors, pickle only, missing dir; then a good one", "yes" if ok else "no", first_b, 0, 0,
               note=f"{refused}/{len(REFUSED)} refused with 422 naming file and reason, bundle {a['sha256']} kept; swap to "
               f"{b.get('sha256')} answered in {swap_s:.2f}s, first window scored by it {first_b:.1f}s after the call; "
               "no camera restarted")


def s5_service_ray_kill(m: Media) -> dict:
    import ray

    svc = ServiceUnderTest.get_or_start(m)
    before = wait_for(svc.open_events, 60, "an open alert")
    all_before = [e["id"] for e in svc.get("/events?camera=alerting&limit=1000").json()]
    bundle = svc.get("/bundle").json()["sha256"]
    handle = ray.get_actor(svc.get("/scorers").json()["cpu"]["actor"], namespace="vad")
    queued = wait_for(lambda: svc.get("/scorers").json()["cpu"]["queue_depth"], 60, "queued windows", every_s=0.05)
    t_kill = time.monotonic()
    ray.kill(handle, no_restart=False)
    saw_503 = False
    while True:
        code = svc.session.get(svc.base + "/healthz", timeout=30).status_code
        saw_503 |= code == 503
        if code == 200 and saw_503:
            break
        if time.monotonic() - t_kill > 120:
            break
        time.sleep(0.1)
    healthy = time.monotonic() - t_kill
    n0 = svc.camera("alerting")["frames_scored"]
    wait_for(lambda: svc.camera("alerting")["frames_scored"] > n0, 60, "scoring resumed", every_s=0.2)
    scoring = time.monotonic() - t_kill
    wait_for(lambda: svc.get("/bundle").json()["sha256"] == bundle, 30, "bundle re-applied", every_s=0.2)
    after = svc.open_events()
    all_after = [e["id"] for e in svc.get("/events?camera=alerting&limit=1000").json()]
    same = [e["id"] for e in after] == [before[0]["id"]] and all_after == all_before
    return row("5 service: scorer actor ray.kill", f"ray.kill with {queued} window(s) queued, alert open",
               "yes" if saw_503 and same else "no", scoring, f"{queued} queued windows",
               0 if same else "?", note=f"/healthz 503 during the outage, 200 after {healthy:.1f}s; scoring resumed after "
               f"{scoring:.1f}s; open alert kept event id {before[0]['id']} (no duplicate); hot-swapped bundle re-applied")


def s6_service_sigterm(m: Media) -> dict:
    import yaml

    from tests.faults.test_service_restart import run_service, service_config

    from offline.scoring.bundle import random_bundle

    work = Path(tempfile.mkdtemp(prefix="vad-restart-"))
    bundle = random_bundle(work / "bundle", size=64, temporal=False, channels=(8, 16, 32))
    (work / "config.yaml").write_text(yaml.safe_dump(service_config(work, bundle)))
    r = run_service(work)
    first, second = r["runs"]
    before = {e["id"] for e in first["events_before_stop"]}
    final = {e["id"]: e for e in second["db_after_stop"]["events"]}
    lost = len(before - set(final))
    reasons = sorted({final[e["id"]]["reason"] for e in first["events_before_stop"] if e["status"] == "open"})
    ok = not lost and first["db_after_stop"]["integrity"] == second["db_after_stop"]["integrity"] == "ok"
    return row("6 service: SIGTERM, serve run again", "SIGTERM of `serve run` x2 with alerts open", "yes" if ok else "no",
               second["healthy_s"], "n/a", lost,
               note=f"{len(before)} events before the stop, all there after the restart; open alert closed at next start, "
               f"reason {reasons}; integrity_check ok, WAL; stop {first['stop_s']:.1f}s")


def s7_service_load(m: Media) -> dict:
    from tests.faults.tools.service_load import run_n_then_2n

    n, seconds = LOAD_CAMERAS, LOAD_SECONDS
    one, two = run_n_then_2n(Path(tempfile.mkdtemp(prefix="vad-load-")), n, seconds, "benchload", wait_s=180.0)

    def fmt(r: dict) -> str:
        return (f"{r['cameras']} cams: scored {r['fps_scored_mean']}/{r['fps_target']} fps, {r['windows_dropped']} windows "
                f"dropped, latency p50 {r['latency_p50_s']}s max {r['latency_max_s']}s, RSS {r['rss_base_mb']:.0f} MB "
                f"+{r['rss_growth_mb']:.0f} (bound {r['rss_bound_mb']:.0f}), actors replaced {len(r['actors_changed'])}")

    ok = all(r["unhealthy_polls"] == 0 and not r["actors_changed"] and r["rss_growth_mb"] <= r["rss_bound_mb"]
             for r in (one, two))
    return row(f"7 service: load {n} then {2 * n} cameras, {seconds:.0f} s each", "paper spatial AE 256x256 on 1 core, "
               "5 fps demo cameras", "yes" if ok else "no", None, f"{two['windows_dropped']} windows shed (counted)",
               "n/a", note=f"{fmt(one)}; {fmt(two)}")


LOAD_CAMERAS, LOAD_SECONDS = 2, 60.0

SCENARIOS: dict[str, Callable[[Media], dict]] = {
    "server_restart": s1_server_restart,
    "stall_open": s2_stall_open,
    "stall_midstream": s2_stall_midstream,
    "corrupt_rtsp": s3_corrupt_rtsp,
    "truncated": s3_truncated,
    "resolution": s3_resolution,
    "wrong_credentials": s4_wrong_credentials,
    "unreachable": s4_unreachable,
    "store_kill": s6_store_kill,
    "bad_config": s8_bad_config,
    "service_server_restart": s1_service_server_restart,
    "service_hot_swap": s9_service_hot_swap,
    "service_ray_kill": s5_service_ray_kill,
    "service_sigterm": s6_service_sigterm,
    "service_load": s7_service_load,
}


def markdown(rows: list[dict]) -> str:
    lines = ["| scenario | faults injected | recovered | time to recover (s) | frames lost beyond the outage | events lost | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rs = "-" if r["recover_s"] is None else f"{r['recover_s']:.2f}"
        lines.append(f"| {r['scenario']} | {r['faults']} | {r['recovered']} | {rs} | {r['frames_lost']} | "
                     f"{r['events_lost']} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.only or list(SCENARIOS)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        m = Media(Path(d))
        for name in names:
            t0 = time.monotonic()
            try:
                r = SCENARIOS[name](m)
            except Exception as e:  # noqa: BLE001 - a failed scenario is a "no" row, the others still run
                r = row(name, "-", "no", None, "?", "?", note=f"scenario failed: {type(e).__name__}: {e}"[:300])
            print(f"{name}: {time.monotonic() - t0:.1f}s {r['recovered']}", file=sys.stderr, flush=True)
            rows.append(r)
    if ServiceUnderTest._instance is not None:
        from ray import serve

        serve.delete("bench")
        ServiceUnderTest._instance.bystander_server.stop()
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["recovered"] in ("yes", "held") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
