"""Fault scenarios, defined once: set up a fault, inject it, measure, return what happened.

The fault tests (tests/faults/test_*.py) assert on the returned results; `python -m bench.faults` formats them
as the rows of the fault table in bench/RESULTS.md. Drivers hold no pytest asserts: a step that never happens
(a state that does not come, a writer that dies) raises, from `StateRecorder.wait`, `wait_for` or here.
Callers own what outlives one scenario (RTSP servers, media) and choose the ingest settings.

- `server_restart`: row 1, kill a camera's RTSP server for 10 s while another camera streams on.
- `stall_before_first_byte`, `midstream_stall`: row 2, a server that accepts and then sends nothing.
- `corrupt_stream`, `truncated_file`, `resolution_change`: row 3, damaged or odd input.
- `held_error`: row 4, wrong credentials or an unreachable host: a scrubbed error state that keeps retrying.
- `store_kill`: row 6 at the store level, event writers killed mid-write, then the next start's settling.
- `CASES`, `refused_config`: row 8, malformed variants of the shipped deploy/config.yaml.
- `service_server_restart`, `service_hot_swap`, `service_ray_kill`: rows 1, 9 and 5 against the running service.
- `service_sigterm_restart`: row 6 for the service, two `serve run` processes with SIGTERM between them.

Over 350 lines on purpose: the one definition of every scenario of the fault table, so that the tests and the
benchmark cannot drift apart; each section is one row.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml

from streaming.config import CameraConfig
from streaming.ingest import IngestLoop, IngestSettings
from tests.faults.tools.media import frame_shapes
from tests.faults.tools.net import FaultProxy
from tests.faults.tools.watch import CAM_PASSWORD, CAM_USER, StateRecorder
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ helpers
def camera_settings(name: str, url: str, **camera) -> IngestSettings:
    """IngestSettings exactly as streaming.camera_actor.CameraActor builds them from a CameraConfig (64x64, 4-frame
    windows); `camera` overrides CameraConfig fields (default analysis rate 5 fps)."""
    return IngestSettings.for_camera(CameraConfig(name=name, url=url, **camera), size=64, window=4)


def file_settings(settings: IngestSettings, loop: bool = False) -> IngestSettings:
    """`settings` for reading a file as fast as it decodes, every frame (no rate drop), once unless `loop`."""
    return dataclasses.replace(settings, fps=None, loop_files=loop, realtime_files=False)


class Windows:
    """on_window sink that records the windows' shapes and accepts everything."""

    def __init__(self, on_window: Callable[[], None] | None = None) -> None:
        self.shapes: list[tuple] = []
        self._on_window = on_window

    def __call__(self, window) -> bool:
        self.shapes.append(window.frames.shape)
        if self._on_window:
            self._on_window()
        return True


def ingest_threads(camera: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"ingest-{camera}" and t.is_alive()]


def _stop(loop: IngestLoop) -> tuple[bool, float]:
    """(ended, seconds stop() took)."""
    t0 = time.monotonic()
    ended = loop.stop()
    return ended, time.monotonic() - t0


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every log record (DEBUG and up) reaching the root logger meanwhile, formatted with its traceback."""
    lines: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    root, handler = logging.getLogger(), Collect(level=logging.DEBUG)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# ------------------------------------------------------------------------------ row 1: server killed, back
@dataclass
class ServerRestart:
    recovery_s: float  # from the server's return to the victim's `streaming`
    retry_delays: list[float]  # backoff delays the victim announced
    reconnects: int  # the victim's reconnect attempts since the kill
    bystander_max_gap_s: float  # longest wait between the other camera's windows during the outage
    stopped: bool  # both loops ended on stop()


def server_restart(victim, other, outage_s: float = 10.0) -> ServerRestart:
    """Kill `victim` (an RtspServer serving mount "cam") mid-stream and start it again `outage_s` later on the same
    port, while a camera on `other` streams on. Both cameras use the camera actor's default settings."""
    rec = StateRecorder()
    sink_a = Windows()
    gaps_b: list[float] = []
    last_b = [time.monotonic()]

    def gap() -> None:
        now = time.monotonic()
        gaps_b.append(now - last_b[0])
        last_b[0] = now

    sink_b = Windows(gap)
    a = IngestLoop("victim", victim.url("cam"), camera_settings("victim", victim.url("cam")), on_window=sink_a,
                   on_state=rec).start()
    b = IngestLoop("bystander", other.url("cam"), camera_settings("bystander", other.url("cam")), on_window=sink_b).start()
    try:
        rec.wait("streaming", 10)
        wait_for(lambda: sink_b.shapes, 10, "the bystander's first window")
        gaps_b.clear()
        reconnects0 = a.counters.reconnects
        t_kill = time.monotonic()
        victim.stop()
        rec.wait("reconnecting", 8, after=t_kill)
        # the outage lasts `outage_s` by the definition: wait for it while A keeps retrying
        wait_for(lambda: time.monotonic() - t_kill >= outage_s, outage_s + 1, "the outage", every_s=0.2)
        victim.start()
        t_back = time.monotonic()
        t_stream, _, _ = rec.wait("streaming", 30, after=t_back)
        n = len(sink_a.shapes)
        wait_for(lambda: len(sink_a.shapes) > n, 5, "windows after the restart")
        reconnects = a.counters.reconnects - reconnects0
    finally:
        stopped = a.stop() & b.stop()
    return ServerRestart(t_stream - t_back, rec.retry_delays(), reconnects, max(gaps_b, default=float("inf")), stopped)


# -------------------------------------------------------------------------------------------- row 2: stalls
@dataclass
class StallOpen:
    open_error: Exception | None  # what open_stream raised (None: it opened)
    open_s: float  # how long open_stream took
    reconnect_s: float  # from IngestLoop start to its first `reconnecting`
    reconnect_detail: str
    stopped: bool
    stop_s: float
    threads_left: int  # ingest threads of the camera still alive after stop()
    accepted: int  # connections the stalling server accepted


def stall_before_first_byte(settings: IngestSettings, name: str = "stall0") -> StallOpen:
    """A server that accepts and then sends nothing: open_stream directly, then an IngestLoop against it."""
    from streaming.sources import StreamTimeoutError, open_stream

    with FaultProxy(None) as stall:
        t0 = time.monotonic()
        open_error: Exception | None = None
        try:
            open_stream(stall.url("cam"), open_timeout_s=settings.open_timeout_s,
                        read_timeout_s=settings.read_timeout_s).close()
        except StreamTimeoutError as e:
            open_error = e
        open_s = time.monotonic() - t0
        rec = StateRecorder()
        t0 = time.monotonic()
        loop = IngestLoop(name, stall.url("cam"), settings, on_state=rec).start()
        try:
            t_rc, _, detail = rec.wait("reconnecting", settings.open_timeout_s + 3)
        finally:
            stopped, stop_s = _stop(loop)
        threads = len(ingest_threads(name))
        accepted = stall.accepted
    return StallOpen(open_error, open_s, t_rc - t0, detail, stopped, stop_s, threads, accepted)


@dataclass
class MidstreamStall:
    fired_after_s: float  # from the stall to `reconnecting`
    detail: str  # the `reconnecting` detail (the timeout that fired)
    disconnects: int
    retry_delays: list[float]
    stall_s: float
    recovery_s: float  # from the resume to `streaming`
    stopped: bool
    stop_s: float
    threads_left: int
    final_state: str


def midstream_stall(upstream_port: int, settings: IngestSettings, name: str = "stall1", attempts: int = 3,
                    min_stall_s: float = 0.0) -> MidstreamStall:
    """A streaming camera behind a loopback proxy whose bytes stop (connection still open); the stall lasts until
    `attempts` reconnect attempts have failed and at least `min_stall_s`, then the proxy forwards again."""
    with FaultProxy(upstream_port) as proxy:
        rec = StateRecorder()
        sink = Windows()
        loop = IngestLoop(name, proxy.url("cam"), settings, on_window=sink, on_state=rec).start()
        try:
            rec.wait("streaming", 10)
            wait_for(lambda: sink.shapes, 5, "a first window")
            t_stall = time.monotonic()
            proxy.stall()
            t_rc, _, detail = rec.wait("reconnecting", settings.read_timeout_s + 3, after=t_stall)
            disconnects = loop.counters.disconnects
            # while stalled, new connections stall too: attempts keep failing
            wait_for(lambda: rec.count("reconnecting") >= attempts, (attempts + 1) * (settings.open_timeout_s + 2),
                     f"{attempts} reconnect attempts")
            wait_for(lambda: time.monotonic() - t_stall >= min_stall_s, min_stall_s + 1, "the stall", every_s=0.2)
            t_resume = time.monotonic()
            proxy.resume()
            t_back, _, _ = rec.wait("streaming", settings.open_timeout_s + settings.backoff_max_s * 1.2 + 5,
                                    after=t_resume)
            n = len(sink.shapes)
            wait_for(lambda: len(sink.shapes) > n, 5, "windows after the stall")
        finally:
            stopped, stop_s = _stop(loop)
    return MidstreamStall(t_rc - t_stall, detail, disconnects, rec.retry_delays(), t_resume - t_stall,
                          t_back - t_resume, stopped, stop_s, len(ingest_threads(name)), loop.counters.state)


# ------------------------------------------------------------------------------------ row 3: damaged input
@dataclass
class CorruptStream:
    running: bool  # the loop was still running after `min_frames`
    states: list[str]
    window_shapes: list[tuple]
    stats: dict
    stopped: bool


def corrupt_stream(url: str, settings: IngestSettings, name: str = "corrupt", min_frames: int = 100) -> CorruptStream:
    """Stream damaged H.264 (served at `url`) until `min_frames` were decoded or flagged corrupt."""
    rec = StateRecorder()
    sink = Windows()
    loop = IngestLoop(name, url, settings, on_window=sink, on_state=rec).start()
    try:
        rec.wait("streaming", 10)
        wait_for(lambda: loop.counters.frames_decoded + loop.counters.corrupt_frames >= min_frames, 12,
                 f"{min_frames} frames")
        running = loop.running
        stats = loop.stats()
    finally:
        stopped = loop.stop()
    return CorruptStream(running, rec.states(), sink.shapes, stats, stopped)


@dataclass
class TruncatedFile:
    readable: int  # frames a plain decode of the file yields
    decoded: int  # frames one pass of the ingest loop decoded
    states: list[str]  # of that pass
    looped_running: bool  # the looping loop still ran after decoding the file twice over
    looped_stopped: bool


def truncated_file(path: Path, settings: IngestSettings, name: str = "trunc") -> TruncatedFile:
    """A file cut mid-packet, read once to its end, then looped until a second pass."""
    readable = len(frame_shapes(path))
    rec = StateRecorder()
    once = IngestLoop(name, str(path), file_settings(settings), on_state=rec)
    once.run()  # returns at the end of the (truncated) file
    looped = IngestLoop(f"{name}2", str(path), file_settings(settings, loop=True)).start()
    try:
        wait_for(lambda: looped.counters.frames_decoded > 2 * readable, 20, "a second pass over the file")
        running = looped.running
    finally:
        stopped = looped.stop()
    return TruncatedFile(readable, once.counters.frames_decoded, rec.states(), running, stopped)


@dataclass
class ResolutionChange:
    source_shapes: list[tuple[int, int]]  # every frame's (height, width) in the file
    decoded: int
    analysed: int
    window_shapes: list[tuple]
    states: list[str]


def resolution_change(path: Path, settings: IngestSettings, name: str = "reschange") -> ResolutionChange:
    """A source whose frame size changes mid-stream, read once."""
    shapes = frame_shapes(path)
    sink = Windows()
    rec = StateRecorder()
    loop = IngestLoop(name, str(path), file_settings(settings), on_window=sink, on_state=rec)
    loop.run()
    return ResolutionChange(shapes, loop.counters.frames_decoded, loop.counters.frames_analysed, sink.shapes,
                            rec.states())


# ------------------------------------------------------------------------- row 4: credentials, unreachable
@dataclass
class HeldError:
    attempts_s: float  # time until the first `attempts` attempts had failed
    rate_per_s: float | None  # attempts per second over `extra_attempts` more (None: not measured)
    retry_delays: list[float]
    stats: dict  # the loop's stats after the attempts
    stopped: bool
    captured: str  # states, stats and every log record: where a credential must not appear


def held_error(name: str, url: str, settings: IngestSettings, attempts: int, within_s: float,
               extra_attempts: int = 0, extra_within_s: float = 5.0) -> HeldError:
    """A camera whose source refuses it (wrong password, closed port): wait for `attempts` failed attempts, then
    time `extra_attempts` more."""
    with captured_logs() as logs:
        rec = StateRecorder()
        loop = IngestLoop(name, url, settings, on_state=rec).start()
        try:
            t0 = time.monotonic()
            wait_for(lambda: rec.count("reconnecting") >= attempts, within_s, f"{attempts} failed attempts")
            attempts_s = time.monotonic() - t0
            rate = None
            if extra_attempts:
                t1, n0 = time.monotonic(), loop.counters.reconnects
                wait_for(lambda: loop.counters.reconnects >= n0 + extra_attempts, extra_within_s,
                         f"{extra_attempts} more attempts")
                rate = (loop.counters.reconnects - n0) / (time.monotonic() - t1)
            stats = loop.stats()
        finally:
            stopped = loop.stop()
    captured = "\n".join([rec.text(), repr(stats), *logs])
    return HeldError(attempts_s, rate, rec.retry_delays(), stats, stopped, captured)


# ------------------------------------------------------------------------- row 6: event writer killed
WRITER = r"""
import sys, time
from streaming.events import EventStore
store = EventStore(sys.argv[1])
cam = sys.argv[2]
snap = bytes(range(256)) * 64   # 16 KiB "JPEG": big enough that a kill can land mid-write
i = 0
while True:
    t = time.time()
    eid = store.open_event(cam, t, 0.9, i, t, snapshot=snap)
    print("open", eid, flush=True)
    store.update_peak(eid, 0.95, i + 1, t + 0.01, snapshot=snap[::-1])
    store.touch(eid, t + 0.02)
    if i % 3 != 2:                  # every third event is left open (an alert still running)
        store.close_event(eid, t + 0.03, "score")
        print("closed", eid, flush=True)
    i += 1
"""


def run_writer(db: Path, camera: str, min_lines: int, sig: int) -> dict[int, str]:
    """Start a writer, let it commit at least `min_lines` changes, kill it with `sig`; {event id: last state seen}."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), camera], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    seen: dict[int, str] = {}
    lines = 0
    deadline = time.monotonic() + 60
    assert proc.stdout is not None  # for the type checker: stdout=PIPE
    try:
        while lines < min_lines:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"writer too slow: {lines}/{min_lines} lines in 60 s")
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    raise RuntimeError(f"writer died on its own (exit {proc.returncode})")
                continue
            kind, eid = proc.stdout.readline().split()
            seen[int(eid)] = kind
            lines += 1
        proc.send_signal(sig)
        proc.wait(10)
        # lines printed after a commit but before the kill are committed too; a kill mid-print leaves a
        # partial last line without its newline, which proves nothing and is ignored
        for line in proc.stdout.read().split("\n")[:-1]:
            kind, eid = line.split()
            seen[int(eid)] = kind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return seen


@dataclass
class StoreKill:
    committed: dict[int, str]  # {event id: last state the writers reported committed}
    integrity: str  # PRAGMA integrity_check after the kills
    journal_mode: str
    rows: dict[int, str]  # {event id: status} in the file after the kills
    snapshots: set[int]  # event ids with a snapshot row
    open_before: list  # events open before the next start settled them
    settled: int  # close_dangling("last_seen") at the next start
    after: dict  # {event id: Event} after settling
    settled_again: int  # a second close_dangling (idempotence)
    count: int  # store.count() after settling


def store_kill(db: Path, sig: int, rounds: int = 3) -> StoreKill:
    """Kill an event writer mid-write `rounds` times (a new camera each round), then start a store on the file
    and settle the alerts left open, as the service does at its start."""
    from streaming.events import EventStore

    committed: dict[int, str] = {}
    for round_ in range(rounds):
        committed.update(run_writer(db, f"cam{round_}", min_lines=60 + 17 * round_, sig=sig))
    with sqlite3.connect(db) as c:
        integrity = c.execute("PRAGMA integrity_check").fetchone()[0]
        journal = c.execute("PRAGMA journal_mode").fetchone()[0]
        rows = {r[0]: r[1] for r in c.execute("SELECT id, status FROM events")}
        snaps = {r[0] for r in c.execute("SELECT event_id FROM snapshots")}
    store = EventStore(db)
    try:
        open_before = [e for e in store.list_events(limit=10_000) if e.status == "open"]
        settled = store.close_dangling("last_seen")
        after = {e.id: e for e in store.list_events(limit=10_000)}
        settled_again = store.close_dangling("last_seen")
        count = store.count()
    finally:
        store.close()
    return StoreKill(committed, integrity, journal, rows, snaps, open_before, settled, after, settled_again, count)


# ------------------------------------------------------------------------------- row 8: malformed config
SHIPPED = REPO / "deploy" / "config.yaml"
ARGS = "applications.0.args."
SECRET_URL = f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:8554/cam"


def app_args(cfg: dict) -> dict:
    return cfg["applications"][0]["args"]


def first_camera(cfg: dict) -> dict:
    return app_args(cfg)["cameras"][0]


def _set(path: str, value):
    """Mutation that sets `args.<path>` (dots; integers index lists), creating missing mappings."""

    def mutate(cfg: dict) -> None:
        node = app_args(cfg)
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
        last = keys[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _add_camera(**cam):
    def mutate(cfg: dict) -> None:
        app_args(cfg)["cameras"].append(cam)

    return mutate


def _top(key: str, value):
    def mutate(cfg: dict) -> None:
        cfg[key] = value

    return mutate


# (id, mutation, text the error must contain (the field path), optional bad value it must name)
CASES = [
    ("unknown_top_key", _set("colour", "blue"), ARGS + "colour: unknown key", None),
    ("unknown_camera_key", _set("cameras.0.pasword", "x"), ARGS + "cameras.0.pasword: unknown key", None),
    ("unknown_scorer_key", _set("scorer.max_batchsize", 4), ARGS + "scorer.max_batchsize: unknown key", None),
    ("fps_wrong_type", _set("cameras.0.fps", "ten"), ARGS + "cameras.0.fps", "'ten'"),
    ("max_batch_wrong_type", _set("scorer.max_batch", [4]), ARGS + "scorer.max_batch", None),
    ("cameras_not_list", _set("cameras", "demo"), ARGS + "cameras", "'demo'"),
    ("threshold_above_1", _set("alerts.threshold", 1.5), ARGS + "alerts.threshold", "1.5"),
    ("camera_threshold_negative", _set("cameras.0.threshold", -0.1), ARGS + "cameras.0.threshold", "-0.1"),
    ("hysteresis_1", _set("alerts.hysteresis", 1.0), ARGS + "alerts.hysteresis", "1.0"),
    ("read_timeout_zero", _set("cameras.0.read_timeout_s", 0), ARGS + "cameras.0.read_timeout_s", "0"),
    ("fps_too_high", _set("cameras.0.fps", 1000), ARGS + "cameras.0.fps", "1000"),
    ("retention_negative", _set("events.retention_days", -1), ARGS + "events.retention_days", "-1"),
    ("port_out_of_range", _set("http.port", 70000), ARGS + "http.port", "70000"),
    ("url_http_scheme", _set("cameras.0.url", "http://127.0.0.1/cam.mjpg"), ARGS + "cameras.0.url", "'http'"),
    ("url_ftp_with_credentials", _set("cameras.0.url", f"ftp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1/x"),
     ARGS + "cameras.0.url", "'ftp'"),
    ("rtsp_without_host", _set("cameras.0.url", "rtsp:///stream"), ARGS + "cameras.0.url", "no host"),
    ("empty_url", _set("cameras.0.url", ""), ARGS + "cameras.0.url", None),
    ("transport_quic", _set("cameras.0.transport", "quic"), ARGS + "cameras.0.transport", "'quic'"),
    ("device_tpu", _set("scorer.devices", ["tpu"]), ARGS + "scorer.devices", "'tpu'"),
    ("path_traversal_name", _set("cameras.0.name", "../../etc/passwd"), ARGS + "cameras.0.name", "'../../etc/passwd'"),
    ("duplicate_camera", _add_camera(name="demo", url="demo://b"), ARGS + "cameras", "'demo' appears twice"),
    ("credentials_in_bad_camera", _add_camera(name="secret cam", url=SECRET_URL), ARGS + "cameras.1.name", None),
    ("token_and_token_env", lambda c: app_args(c)["http"].update(token="t", token_env="VAD_T"), "token or token_env",
     None),
    ("http_host_mismatch", _set("http.host", "0.0.0.0"), "http_options.host", "'127.0.0.1'"),
    ("no_app", _top("applications", []), "applications must be a non-empty list", None),
]


def refused_config(base: dict, mutate: Callable[[dict], None], path: Path) -> str | None:
    """Write a copy of `base` changed by `mutate` to `path` and load it: the ConfigError's message, None if it loaded."""
    import copy

    from offline.config import ConfigError
    from streaming.config import load_service_config

    cfg = copy.deepcopy(base)
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg))
    try:
        load_service_config(path)
    except ConfigError as e:
        return str(e)
    return None


# ------------------------------------------------------------------------------------ service-level rows
# These drive a running app (one local Ray, Serve) through a ServiceClient; the app has an always-alerting
# camera "alerting" (threshold 0) and one CPU scorer.
class ServiceClient:
    """HTTP client of one app under `base` (http://127.0.0.1:PORT/PREFIX) that keeps every response body (for the
    credential grep)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.captured: list[str] = []

    def request(self, method: str, path: str, auth: bool | str = True, **kw):
        """`auth`: True sends the test token, a string sends that token, False none."""
        import requests

        from tests.faults.tools.watch import API_TOKEN

        headers = kw.pop("headers", {})
        if auth:
            headers["Authorization"] = f"Bearer {API_TOKEN if auth is True else auth}"
        r = requests.request(method, self.base + path, headers=headers, timeout=30, **kw)
        self.captured.append(r.text if "image" not in r.headers.get("content-type", "") else "")
        return r

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def camera(self, name: str) -> dict:
        r = self.get(f"/cameras/{name}")
        if r.status_code != 200:
            raise RuntimeError(f"GET /cameras/{name}: {r.status_code} {r.text[:300]}")
        return r.json()


def metric(text: str, series: str) -> float | None:
    """The value of one Prometheus series (`name{labels}`) in an exposition text, None if absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def open_events(svc: ServiceClient, camera: str = "alerting") -> list[dict]:
    return [e for e in svc.get(f"/events?camera={camera}&limit=1000").json() if e["status"] == "open"]


@dataclass
class ServiceServerRestart:
    samples: list[tuple[float, dict]]  # (monotonic t, {camera: /cameras status}) every ~0.3 s
    t_kill: float
    t_back: float  # the server's return
    back_s: float  # from the return to the victim's `streaming`
    retry_steps: list[float]  # the victim's distinct successive retry_in_s while it was reconnecting
    reconnects: tuple[float, float]  # vad_reconnects_total of the victim before the kill and after the return

    def outage(self) -> list[dict]:
        """The victim's status at each sample of the outage."""
        return [c["victim"] for t, c in self.samples if self.t_kill < t <= self.t_back]

    def worst_gap_s(self, camera: str) -> float:
        """Longest time between increments of `camera`'s decoded frames over all samples."""
        series = [(t, c[camera]["frames_decoded"]) for t, c in self.samples]
        last_t, last_n, worst = series[0][0], series[0][1], 0.0
        for t, n in series[1:]:
            if n > last_n:
                worst, last_t, last_n = max(worst, t - last_t), t, n
        return max(worst, series[-1][0] - last_t)


def service_server_restart(svc: ServiceClient, server, outage_s: float = 10.0, fps: float = 5.0) -> ServiceServerRestart:
    """Add a camera "victim" on `server` (an RtspServer serving "cam") through the API, kill the server, start it
    again `outage_s` later; sample /cameras throughout and a few seconds after the victim is back. The victim is
    removed at the end; the caller stops `server`."""
    body = {"name": "victim", "url": server.url("cam"), "fps": fps, "read_timeout_s": 2, "open_timeout_s": 3}
    r = svc.request("POST", "/cameras", json=body)
    if r.status_code != 201:
        raise RuntimeError(f"POST /cameras: {r.status_code} {r.text[:300]}")
    samples: list[tuple[float, dict]] = []
    try:
        wait_for(lambda: svc.camera("victim")["state"] == "streaming", 60, "victim streaming", every_s=0.3)
        series = 'vad_reconnects_total{camera="victim"}'
        reconnects0 = metric(svc.get("/metrics").text, series) or 0.0

        def sample() -> dict:
            cams = {c["name"]: c for c in svc.get("/cameras").json()}
            samples.append((time.monotonic(), cams))
            return cams

        sample()
        t_kill = time.monotonic()
        server.stop()
        while time.monotonic() - t_kill < outage_s:
            sample()
            time.sleep(0.3)
        server.start()
        t_back = time.monotonic()
        while sample()["victim"]["state"] != "streaming":
            if time.monotonic() - t_back >= 30:
                raise TimeoutError(f"victim not streaming 30 s after its server's return: {samples[-1][1]['victim']}")
            time.sleep(0.2)
        back_s = samples[-1][0] - t_back
        for _ in range(10):  # a few seconds more of the bystanders after the return
            sample()
            time.sleep(0.3)
        reconnects1 = metric(svc.get("/metrics").text, series) or 0.0
    finally:
        svc.request("DELETE", "/cameras/victim")
    out = [c["victim"] for t, c in samples if t_kill < t <= t_back]
    delays = [c["retry_in_s"] for c in out if c["state"] == "reconnecting" and c["retry_in_s"] is not None]
    steps = [d for i, d in enumerate(delays) if i == 0 or d != delays[i - 1]]
    return ServiceServerRestart(samples, t_kill, t_back, back_s, steps, (reconnects0, reconnects1))


@dataclass
class ServiceHotSwap:
    before: dict  # GET /bundle before
    refused: list[tuple[str, Path, int, str, str]]  # (kind, bad bundle, status, detail, GET /bundle sha256 after)
    still_a: dict  # the alerting camera scoring on after the refusals
    response: object  # the good PUT's response
    swap_s: float  # how long the good PUT took
    first_scored_s: float  # from the good PUT to the first window scored by the new bundle
    after: dict  # GET /bundle after the swap


def service_hot_swap(svc: ServiceClient, good: Path, root: Path) -> ServiceHotSwap:
    """PUT /bundle with each damaged copy of `good` (test_bundle_swap.REFUSED, made under `root`), then `good`;
    wait for the alerting camera to score with it."""
    from tests.faults.test_bundle_swap import REFUSED, damaged_bundle

    before = svc.get("/bundle").json()
    refused = []
    for kind, _, _ in REFUSED:
        bad = damaged_bundle(kind, good, root)
        r = svc.request("PUT", "/bundle", json={"path": str(bad)})
        detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") else r.text
        refused.append((kind, bad, r.status_code, str(detail), svc.get("/bundle").json()["sha256"]))
    n0 = svc.camera("alerting")["frames_scored"]
    still_a = wait_for(lambda: (c := svc.camera("alerting"))["frames_scored"] > n0 and c, 60, "scores with A",
                       every_s=0.3)
    t0 = time.monotonic()
    r = svc.request("PUT", "/bundle", json={"path": str(good)})
    swap_s = time.monotonic() - t0
    if r.status_code != 200:
        raise RuntimeError(f"PUT /bundle {good}: {r.status_code} {r.text[:300]}")
    sha = r.json()["sha256"]
    n1 = svc.camera("alerting")["frames_scored"]
    wait_for(lambda: (c := svc.camera("alerting"))["frames_scored"] > n1 and c["bundle"]["sha256"] == sha, 60,
             "scores with the new bundle", every_s=0.2)
    first = time.monotonic() - t0
    return ServiceHotSwap(before, refused, still_a, r, swap_s, first, svc.get("/bundle").json())


@dataclass
class ServiceRayKill:
    open_before: list[dict]  # the alerting camera's open events before the kill
    events_before: list[dict]
    queued: int  # windows in the scorer's queue at the kill
    unhealthy: dict  # /healthz 503 body during the outage
    healthy_s: float  # from the kill to /healthz 200
    scoring_s: float  # from the kill to the alerting camera's next scored frame
    open_after: list[dict]
    events_after: list[dict]


def service_ray_kill(svc: ServiceClient) -> ServiceRayKill:
    """`ray.kill` the scorer actor (restartable) while windows wait in its queue and an alert is open; wait for
    /healthz 503 then 200 (asked without credentials, as a probe does), scoring, the alert state and the bundle
    that ran before."""
    import ray

    before = wait_for(lambda: open_events(svc), 60, "an open alert on the alerting camera")
    all_before = svc.get("/events?camera=alerting&limit=1000").json()
    active = svc.get("/bundle").json()
    handle = ray.get_actor(svc.get("/scorers").json()["cpu"]["actor"], namespace="vad")
    queued = wait_for(lambda: svc.get("/scorers").json()["cpu"]["queue_depth"], 60, "windows queued", every_s=0.05)
    t_kill = time.monotonic()
    ray.kill(handle, no_restart=False)
    body = wait_for(lambda: (r := svc.get("/healthz", auth=False)).status_code == 503 and r.json(), 15, "healthz 503")
    wait_for(lambda: svc.get("/healthz", auth=False).status_code == 200, 90, "healthz 200 after the restart")
    healthy_s = time.monotonic() - t_kill
    n0 = svc.camera("alerting")["frames_scored"]
    wait_for(lambda: svc.camera("alerting")["frames_scored"] > n0, 60, "scoring resumed", every_s=0.2)
    scoring_s = time.monotonic() - t_kill
    wait_for(lambda: svc.camera("alerting")["alert_open"], 60, "alert state resumed", every_s=0.3)
    wait_for(lambda: svc.get("/bundle").json()["sha256"] == active["sha256"], 30, "the bundle back")
    return ServiceRayKill(before, all_before, queued, body, healthy_s, scoring_s, open_events(svc),
                          svc.get("/events?camera=alerting&limit=1000").json())


# ---------------------------------------------------------------- row 6 for the service: SIGTERM, run again
RESTART_PORT = 28_394


def restart_config(work: Path, bundle: Path) -> dict:
    """A `serve run` file: two cameras that alert as soon as their normaliser is warm (threshold 0)."""
    from tests.faults.tools.watch import API_TOKEN

    cams = [{"name": n, "url": f"demo://street?seed={k}&fps=10&size=64", "fps": 5, "threshold": 0.0, "min_duration_s": 0.0}
            for k, n in enumerate(("a", "b"))]
    args = {
        "cameras": cams,
        "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "devices": ["cpu"], "max_wait_ms": 50,
                   "torch_threads": 1, "num_cpus": 0.25},
        "events": {"path": str(work / "events.db")},
        "state": {"persist": False},  # events are the subject here; API changes kept across restarts: test_state.py
        "http": {"host": "127.0.0.1", "port": RESTART_PORT, "token": API_TOKEN},
    }
    return {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": RESTART_PORT},
            "applications": [{"name": "vad", "route_prefix": "/", "import_path": "streaming.app:build_app", "args": args}]}


def db_check(db: Path) -> dict:
    """integrity_check, journal mode and every event row, read straight from the file."""
    with sqlite3.connect(db) as c:
        return {
            "integrity": c.execute("PRAGMA integrity_check").fetchone()[0],
            "journal": c.execute("PRAGMA journal_mode").fetchone()[0],
            "events": [dict(zip(("id", "camera", "start_s", "end_s", "peak_score", "updated_s", "status", "reason"), r))
                       for r in c.execute("SELECT id, camera, start_s, end_s, peak_score, updated_s, status, reason "
                                          "FROM events ORDER BY id")],
        }


def service_sigterm_restart(work: Path, env: dict | None = None) -> dict:
    """`serve run` a two-camera config (bundle and config.yaml made in `work`), let both cameras alert, remove
    camera b, SIGTERM; `serve run` again, new alerts, SIGTERM. The runs happen in a child process (this module with
    `--restart-driver`), in a private network namespace where allowed: `serve run` starts its own Ray.

    Returns {"runs": [run, run]}, each run: healthy_s, events_before_stop (API), t_sigterm (wall clock),
    stopped_by_sigterm, stop_s, db_after_stop (`db_check`).
    """
    import json

    from offline.scoring.bundle import random_bundle
    from tests.streaming.service_support import netns_prefix

    bundle = random_bundle(work / "bundle", size=64, temporal=False, channels=(8, 16, 32))
    (work / "config.yaml").write_text(yaml.safe_dump(restart_config(work, bundle)))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO), **(env or {})}
    cmd = [*netns_prefix(), sys.executable, "-m", "tests.faults.scenarios", "--restart-driver", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, cwd=work)
    logs = "".join(p.read_text()[-2000:] for p in sorted(work.glob("serve-*.log")))
    result = work / "result.json"
    if not result.is_file():
        raise RuntimeError(f"driver failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}\n{logs}")
    return json.loads(result.read_text())


def _restart_driver(work: Path) -> int:
    """The child of `service_sigterm_restart`: both service runs; writes work/result.json after each."""
    import json

    import requests

    from tests.faults.tools.watch import API_TOKEN
    from tests.streaming.service_support import start_serve_run, stop_serve_run
    from tests.streaming.service_support import wait_for as wait_for_service

    base = f"http://127.0.0.1:{RESTART_PORT}"
    h = {"Authorization": f"Bearer {API_TOKEN}"}

    def events() -> list[dict]:
        return requests.get(f"{base}/events?limit=1000", headers=h, timeout=10).json()

    runs: list[dict] = []
    for k in range(2):
        run: dict = {}
        t0 = time.monotonic()
        proc = start_serve_run(work, work / f"serve-{k}.log")
        try:
            wait_for_service(lambda: requests.get(f"{base}/healthz", timeout=5).status_code == 200, 180, "healthz")
            run["healthy_s"] = time.monotonic() - t0
            if k == 0:
                wait_for_service(lambda: {e["camera"] for e in events() if e["status"] == "open"} == {"a", "b"}, 120,
                                 "two alerts")
                r = requests.delete(f"{base}/cameras/b", headers=h, timeout=60)
                if r.status_code != 204:
                    raise RuntimeError(f"DELETE /cameras/b: {r.status_code} {r.text[:300]}")
                wait_for_service(lambda: any(e["camera"] == "b" and e["status"] == "closed" for e in events()), 30,
                                 "b closed")
            else:
                known = {e["id"] for e in runs[0]["events_before_stop"]}
                wait_for_service(lambda: {e["camera"] for e in events() if e["id"] not in known and e["status"] == "open"}
                                 == {"a", "b"}, 120, "new alerts")
            time.sleep(1.0)  # a few more touches of the open alert
            run["events_before_stop"] = events()
        finally:
            run["t_sigterm"] = time.time()
            t_stop = time.monotonic()
            run["stopped_by_sigterm"] = stop_serve_run(proc, 90)
            run["stop_s"] = time.monotonic() - t_stop
            run["db_after_stop"] = db_check(work / "events.db")
            runs.append(run)
            (work / "result.json").write_text(json.dumps({"runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="child process of service_sigterm_restart")
    ap.add_argument("--restart-driver", type=Path, required=True, metavar="WORK")
    sys.exit(_restart_driver(ap.parse_args().restart_driver))
