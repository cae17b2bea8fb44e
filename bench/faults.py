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
events lost (committed alert events missing afterwards). Rows 1-4, 6 (store) and 8 run the fault tests' own
scenarios (tests/faults/scenarios.py: a real GStreamer RTSP server on 127.0.0.1, a loopback stall/cut proxy,
damaged files; nothing leaves loopback) with the camera defaults, and only format their results here; so do
the service rows 1, 9 and 5 (against an app like the fault suite's), 6 (two `serve run`
processes) and 7 (tests/faults/tools/service_load.py).

Over 350 lines on purpose: one function per row of the table, each only turning a scenario's result into the row.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from streaming.ingest import IngestSettings
from tests.faults import scenarios
from tests.faults.tools import media
from tests.faults.tools.net import closed_port
from tests.faults.tools.watch import CAM_PASSWORD, CAM_USER, WRONG_PASSWORD, find_secrets
from tests.polling import wait_for
from tests.streaming.rtsp_server import RtspServer

ANALYSIS_FPS = 5.0
OUTAGE_S = 10.0


def settings_for(name: str, fps: float | None = ANALYSIS_FPS, **camera) -> IngestSettings:
    """IngestSettings as the camera actor derives them from a CameraConfig (64x64, 4-frame windows); `camera`
    overrides its defaults; fps None analyses every decoded frame."""
    s = scenarios.camera_settings(name, "rtsp://127.0.0.1/unused", fps=fps or ANALYSIS_FPS, **camera)
    s.fps = fps
    return s


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
    try:
        r = scenarios.server_restart(victim, other, outage_s=OUTAGE_S)
    finally:
        victim.stop(), other.stop()
    ok = r.recovery_s <= 5.0 and r.bystander_max_gap_s < 3.0
    return row("1 RTSP server killed, back after 10 s", "server SIGTERM, 10 s outage", "yes" if ok else "no",
               r.recovery_s, int(round(r.recovery_s * ANALYSIS_FPS)),
               note=f"{r.reconnects} reconnect attempts, delays {r.retry_delays}; bystander max window gap "
               f"{r.bystander_max_gap_s:.2f}s")


def s2_stall_open(m: Media) -> dict:
    r = scenarios.stall_before_first_byte(settings_for("stall0", open_timeout_s=3.0, read_timeout_s=2.0))
    return row("2 stall before the first byte", "server accepts, sends nothing", "held" if r.stopped else "no",
               None, "n/a", note=f"open timeout fired after {r.reconnect_s:.2f}s (bound 3.0 s); stop() took "
               f"{r.stop_s:.2f}s, thread ended: {r.stopped}")


def s2_stall_midstream(m: Media) -> dict:
    server = RtspServer({"cam": m.clean}).start()
    try:
        r = scenarios.midstream_stall(server.port, settings_for("stall1", open_timeout_s=3.0, read_timeout_s=2.0),
                                      min_stall_s=8.0)
    finally:
        server.stop()
    ok = r.stopped and not r.threads_left and r.recovery_s <= 5
    return row(f"2 stall mid-stream ({r.stall_s:.0f} s)", "proxy stops forwarding", "yes" if ok else "no",
               r.recovery_s, int(round(r.recovery_s * ANALYSIS_FPS)),
               note=f"read timeout (2.0 s) fired after {r.fired_after_s:.2f}s; {len(r.retry_delays)} failed attempts "
               f"during the stall; no thread left: {r.stopped and not r.threads_left}")


def s3_corrupt_rtsp(m: Media) -> dict:
    server = RtspServer({"bad": m.corrupt}).start()
    try:
        r = scenarios.corrupt_stream(server.url("bad"), settings_for("corrupt", fps=None), min_frames=100)
    finally:
        server.stop()
    c = m.corrupt_counts
    return row("3 corrupt H.264 over RTSP", f"{c['flipped_bytes']} bytes flipped in {c['damaged_packets']}/"
               f"{c['packets']} packets", "yes" if r.running and "error" not in r.states else "no", 0.0, "0 skipped",
               note=f"{r.stats['frames_decoded']} frames decoded (concealed), {r.stats['corrupt_frames']} flagged "
               f"corrupt; reconnects {r.stats['reconnects']}")


def s3_truncated(m: Media) -> dict:
    r = scenarios.truncated_file(m.truncated, settings_for("trunc"))
    ok = r.states[-1] == "stopped" and "error" not in r.states and r.looped_running
    return row("3 truncated file", "file cut at 50 % mid-packet", "yes" if ok else "no", 0.0, r.readable - r.decoded,
               note=f"{r.decoded}/{r.readable} readable frames decoded, ended cleanly; looped: a second pass")


def s3_resolution(m: Media) -> dict:
    r = scenarios.resolution_change(m.resolution, settings_for("res"))
    seen = sorted(set(r.window_shapes))
    return row("3 resolution change mid-stream", "320x240 -> 176x144 -> 320x240",
               "yes" if seen == [(4, 64, 64, 3)] else "no", 0.0, len(r.source_shapes) - r.decoded,
               note=f"all frames resized to 64x64: {seen}")


def _held_error(name: str, url: str, faults: str, label: str) -> dict:
    # camera defaults: backoff 0.5 s doubling to 3 s (+-20 %); 4 attempts, then the rate over 2 more at the cap
    r = scenarios.held_error(name, url, settings_for(name), attempts=4, within_s=30, extra_attempts=2,
                             extra_within_s=10)
    leaked = find_secrets(r.captured)
    return row(label, faults, "held" if r.stats["state"] == "reconnecting" and not leaked else "no", None, "n/a",
               note=f"4 failed attempts in {r.attempts_s:.1f}s, then {r.rate_per_s:.2f} attempts/s; {r.stats['reconnects']} "
               f"in all (delays {r.retry_delays}); error: {r.stats['last_error']}; credentials leaked: {leaked or 'none'}")


def s4_wrong_credentials(m: Media) -> dict:
    server = RtspServer({"cam": m.clean}, user=f"{CAM_USER}:{CAM_PASSWORD}").start()
    try:
        url = f"rtsp://{CAM_USER}:{WRONG_PASSWORD}@127.0.0.1:{server.port}/cam"
        return _held_error("auth", url, "wrong password (RTSP basic auth)", "4 wrong credentials")
    finally:
        server.stop()


def s4_unreachable(m: Media) -> dict:
    url = f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:{closed_port()}/cam"
    return _held_error("unreach", url, "connection refused (closed port)", "4 unreachable host")


def s6_store_kill(m: Media) -> dict:
    with tempfile.TemporaryDirectory() as d:
        r = scenarios.store_kill(Path(d) / "events.db", signal.SIGKILL, rounds=3)
    lost = len(set(r.committed) - set(r.rows))
    settled = r.settled == len(r.open_before) and all(r.after[e.id].reason == "restart" for e in r.open_before)
    ok = r.integrity == "ok" and not lost and settled
    return row("6 event writer SIGKILLed x3", "SIGKILL mid-write, 3 times", "yes" if ok else "no", None, "n/a", lost,
               note=f"{len(r.committed)} committed events checked; integrity_check: {r.integrity}; "
               f"{r.settled} open alerts closed at the next start (reason restart)")


def s8_bad_config(m: Media) -> dict:
    import yaml

    base = yaml.safe_load(scenarios.SHIPPED.read_text())
    named = 0
    with tempfile.TemporaryDirectory() as d:
        for case_id, mutate, field, bad in scenarios.CASES:
            msg = scenarios.refused_config(base, mutate, Path(d) / f"{case_id}.yaml")
            named += msg is not None and field in msg and (bad is None or bad in msg) and not find_secrets(msg)
    n = len(scenarios.CASES)
    return row("8 malformed deploy/config.yaml", f"{n} variants", "yes" if named == n else "no", None, "n/a",
               note=f"{named}/{n} refused naming the field and the bad value, no credential echoed")


# ------------------------------------------------------------------------------------ service-level rows
class ServiceUnderTest(scenarios.ServiceClient):
    """An app like the fault suite's (tests/faults/test_service_faults.py): an always-alerting demo camera and an
    RTSP bystander, started once for these rows."""

    _instance: "ServiceUnderTest | None" = None

    def __init__(self, m: Media):
        from ray import serve

        from offline.scoring.bundle import random_bundle
        from streaming.app import build_app
        from tests.faults.tools.watch import API_TOKEN
        from tests.streaming.service_support import SERVE_PORT, ensure_ray

        super().__init__(f"http://127.0.0.1:{SERVE_PORT}/bench")
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
        wait_for(lambda: self.camera("alerting")["windows_scored"] >= 1, 120, "first scores", every_s=0.5)

    @classmethod
    def get_or_start(cls, m: Media) -> "ServiceUnderTest":
        if cls._instance is None:
            cls._instance = ServiceUnderTest(m)
        return cls._instance


def s1_service_server_restart(m: Media) -> dict:
    svc = ServiceUnderTest.get_or_start(m)
    server = RtspServer({"cam": m.clean}).start()
    try:
        r = scenarios.service_server_restart(svc, server, outage_s=OUTAGE_S, fps=ANALYSIS_FPS)
    finally:
        server.stop()
    r0, r1 = r.reconnects
    gap = r.worst_gap_s("bystander")
    ok = r.back_s <= 5.0 and r1 > r0 and gap < 3.0
    return row("1 service: RTSP server killed, back after 10 s", "server SIGTERM, 10 s outage", "yes" if ok else "no",
               r.back_s, int(round(r.back_s * ANALYSIS_FPS)),
               note=f"/cameras: reconnecting, retry_in_s {r.retry_steps}; vad_reconnects_total {r0:.0f} -> {r1:.0f}; "
               f"bystander camera max gap between decoded-frame increments {gap:.2f}s")


def s9_service_hot_swap(m: Media) -> dict:
    from tests.faults.test_bundle_swap import REFUSED

    svc = ServiceUnderTest.get_or_start(m)
    r = scenarios.service_hot_swap(svc, svc.bundle_b, svc.root)
    a = r.before["sha256"]
    refused = sum(status == 422 and text in detail and sha == a
                  for (_, _, status, detail, sha), (_, _, text) in zip(r.refused, REFUSED))
    ok = r.response.status_code == 200 and refused == len(REFUSED)
    return row("9 service: bundle hot-swap + 5 refused bundles", f"PUT /bundle x{len(REFUSED) + 1}: checksum, version, "
               "pickle as safetensors, pickle only, missing dir; then a good one", "yes" if ok else "no",
               r.first_scored_s, 0, 0,
               note=f"{refused}/{len(REFUSED)} refused with 422 naming file and reason, bundle {a} kept; swap to "
               f"{r.after['sha256']} answered in {r.swap_s:.2f}s, first window scored by it {r.first_scored_s:.1f}s "
               "after the call; no camera restarted")


def s5_service_ray_kill(m: Media) -> dict:
    svc = ServiceUnderTest.get_or_start(m)
    r = scenarios.service_ray_kill(svc)
    same = ([e["id"] for e in r.open_after] == [r.open_before[0]["id"]]
            and [e["id"] for e in r.events_after] == [e["id"] for e in r.events_before])
    return row("5 service: scorer actor ray.kill", f"ray.kill with {r.queued} window(s) queued, alert open",
               "yes" if same else "no", r.scoring_s, f"{r.queued} queued windows", 0 if same else "?",
               note=f"/healthz 503 during the outage, 200 after {r.healthy_s:.1f}s; scoring resumed after "
               f"{r.scoring_s:.1f}s; open alert kept event id {r.open_before[0]['id']} (no duplicate); hot-swapped "
               "bundle re-applied")


def s6_service_sigterm(m: Media) -> dict:
    r = scenarios.service_sigterm_restart(Path(tempfile.mkdtemp(prefix="vad-restart-")))
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
    for handler in logging.getLogger().handlers:  # row 4 captures DEBUG records; print warnings only
        handler.setLevel(logging.WARNING)
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
