"""Soak: the real service with N cameras and faults on a schedule, sampled for growth without bound and lost events.

    .venv/bin/python -m bench.soak --minutes 60 --cameras 4 [--json out.json]   # from the repository root

Half the cameras are demo feeds, half RTSP (the GStreamer test server on 127.0.0.1 re-encoding the shared
vtest.avi, real footage) through a loopback fault proxy. Every `--fault-every-s` the next fault of the cycle is
injected: an RTSP cut, a 6 s stall, 6 s of damaged RTP payloads (30 % of packets), `ray.kill` of the scorer, a
bundle hot-swap (A <-> B), a 12 s recording of a demo camera, and a learn job on its recordings (the tiny
schedule, spatial AE only: the `cpu` one would train for tens of minutes on the same 2 cores; every job must end
`done`, the last one waited for at the end).
Every 5 s: RSS, open descriptors and threads of every process of the local Ray session, the events database's
size (with its WAL), the worst lag, windows dropped, and the event ids seen. Fails (exit 1) when, after the
warm-up, the level (median over a minute) of memory grows past 10 % + 256 MiB or that of descriptors or threads
past +64, an event once seen is missing at the end, the service is not healthy with every camera scoring again
within 30 s of a fault, or a learn job failed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.scenarios import ServiceClient
from tests.faults.tools.net import FaultProxy
from tests.faults.tools.service_load import rss_mb
from tests.faults.tools.watch import API_TOKEN, process_tree
from tests.polling import wait_for

APP, PREFIX = "soak", "/soak"
VTEST = Path(os.environ.get("VAD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "vtest" / "vtest.avi"
SAMPLE_S, WARMUP_S, LEVEL_SPAN_S = 5.0, 30.0, 60.0
FAULTS = ("cut", "stall", "corrupt", "scorer_kill", "swap", "record", "learn")
LEARN_TIMEOUT_S = 600.0


def _proc_counts(pid: int) -> tuple[float, int, int, str]:
    """(RSS MB, open descriptors, threads, name) of one process; zeros when it is gone.

    The name is the kernel's (`comm`: "ray::ScorerServ", "raylet", "gcs_server"), so a growing total can be
    traced to the process that grows.
    """
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = int(next(ln.split()[1] for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if ln.startswith("Threads:")))
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, StopIteration):
        return 0.0, 0, 0, ""
    return rss_mb(pid) or 0.0, fds, threads, name


class Soak:
    def __init__(self, root: Path, cameras: int):
        from ray import serve

        from offline.scoring.bundle import random_bundle
        from streaming.app import build_app
        from tests.streaming.rtsp_server import RtspServer
        from tests.streaming.service_support import SERVE_PORT, ensure_ray

        self.root = root
        self.bundles = [random_bundle(root / n, size=64, temporal=False, channels=(8, 16, 32), seed=i)
                        for i, n in enumerate(("a", "b"))]
        self.server = RtspServer({"vtest": VTEST}).start()
        n_rtsp = cameras // 2
        self.proxies = [FaultProxy(self.server.port) for _ in range(n_rtsp)]
        cams = [{"name": f"rtsp{i}", "url": p.url("vtest"), "fps": 5, "read_timeout_s": 3} for i, p in enumerate(self.proxies)]
        cams += [{"name": f"demo{i}", "url": f"demo://street?seed={i}&fps=10&size=64&anomaly_every_s=15", "fps": 5}
                 for i in range(cameras - n_rtsp)]
        self.db = root / "events.db"
        args = {"cameras": cams, "events": {"path": str(self.db)}, "state": {"persist": False},
                "scorer": {"bundle": str(self.bundles[0]), "build_demo_bundle": False, "devices": ["cpu"],
                           "max_batch": 4, "torch_threads": 1, "num_cpus": 0.25},
                "recordings": {"root": str(root / "recordings")}, "learn": {"bundles_root": str(root / "learned")},
                "http": {"host": "127.0.0.1", "port": SERVE_PORT, "token": API_TOKEN}}
        ensure_ray()
        serve.run(build_app(args), name=APP, route_prefix=PREFIX)
        self.api = ServiceClient(f"http://127.0.0.1:{SERVE_PORT}{PREFIX}")
        self.names = [c["name"] for c in cams]
        wait_for(lambda: all(self.api.camera(n)["windows_scored"] > 0 for n in self.names), 180, "every camera scored",
                 every_s=1.0, retry_on=(Exception,))
        self.swaps = 0
        self.learn_jobs: list[dict] = []

    def sample(self, t: float) -> dict:
        procs = [_proc_counts(p) for p in process_tree(os.getpid())]
        cams = self.api.get("/cameras").json()
        r = self.api.get("/events?limit=10000")  # 503 while the scorer (the events' writer) restarts
        events = r.json() if r.status_code == 200 else []
        db = sum(f.stat().st_size for f in self.root.glob("events.db*"))
        by_name: dict[str, float] = {}
        for p in procs:
            if p[3]:
                by_name[p[3]] = round(by_name.get(p[3], 0.0) + p[0], 1)
        return {"t": round(t, 1), "rss_mb": round(sum(p[0] for p in procs), 1), "fds": sum(p[1] for p in procs),
                "rss_mb_by_process": by_name,
                "threads": sum(p[2] for p in procs), "db_bytes": db,
                "lag_s": round(max((c.get("lag_s") or 0.0) for c in cams), 2),
                "windows_dropped": sum(c["windows_dropped"] for c in cams),
                "alerts": len(events), "event_ids": sorted(e["id"] for e in events)}

    def fault(self, kind: str) -> None:
        import ray

        if kind == "cut":
            self.proxies[0].cut()
        elif kind == "stall":
            self.proxies[0].stall()
            time.sleep(6)
            self.proxies[0].resume()
        elif kind == "scorer_kill":
            name = self.api.get("/scorers").json()["cpu"]["actor"]
            ray.kill(ray.get_actor(name, namespace="vad"), no_restart=False)  # a crash: Ray restarts it
        elif kind == "swap":
            self.swaps += 1
            r = self.api.request("PUT", "/bundle", json={"path": str(self.bundles[self.swaps % 2])})
            assert r.status_code == 200, r.text[:300]
        elif kind == "corrupt":
            self.proxies[0].corrupt(0.3)
            time.sleep(6)
            self.proxies[0].corrupt(0.0)
        elif kind == "record":
            r = self.api.request("POST", f"/cameras/{self.names[-1]}/recordings", json={"minutes": 0.2})
            assert r.status_code == 202, r.text[:300]
        elif kind == "learn":  # the tiny schedule on what "record" recorded; its result is checked later
            self.learn_done()
            r = self.api.request("POST", f"/cameras/{self.names[-1]}/learn", json={"schedule": "tiny", "temporal": False})
            assert r.status_code == 202, r.text[:300]
            self.learn_jobs.append({"id": r.json()["id"], "state": "queued"})

    def learn_done(self, timeout_s: float = 0.0) -> None:
        """Wait up to `timeout_s` for the learn jobs to end; raise when one failed or is still going after it."""
        def ended() -> bool:
            for job in self.learn_jobs:
                if job["state"] not in ("done", "failed"):
                    r = self.api.get(f"/jobs/{job['id']}")
                    body = r.json() if r.status_code == 200 else {}
                    job["state"], job["error"] = body.get("state", job["state"]), body.get("error")
            return all(j["state"] in ("done", "failed") for j in self.learn_jobs)

        if not ended():
            wait_for(ended, timeout_s, "learn jobs ended", every_s=2.0, retry_on=(Exception,))
        failed = [j for j in self.learn_jobs if j["state"] == "failed"]
        if failed:
            raise RuntimeError(f"learn job failed: {failed[-1]}")

    def recovered(self, timeout_s: float = 30.0) -> float:
        """Seconds until /healthz is 200 and every camera scored a new window (a restarted scorer counts from 0)."""
        t0 = time.monotonic()
        before = {n: self.api.camera(n)["windows_scored"] for n in self.names}
        wait_for(lambda: self.api.get("/healthz", auth=False).status_code == 200
                 and all(self.api.camera(n)["windows_scored"] not in (None, before[n]) for n in self.names),
                 timeout_s, "healthy and every camera scoring", every_s=0.5, retry_on=(Exception,))
        return time.monotonic() - t0

    def stop(self) -> None:
        from ray import serve

        serve.delete(APP)
        for p in self.proxies:
            p.close()
        self.server.stop()


def _level(samples: list[dict], key: str, span_s: float = LEVEL_SPAN_S) -> float:
    """The median of `key` over the last `span_s` seconds of `samples`: the level a leak raises.

    A fault starts short-lived processes (a recorder's worker, a scorer's replacement beside the dying one) whose
    descriptors, threads and memory vanish within seconds, and a killed process drops out of the sum for a sample
    or two; a peak or a minimum counts those, a median over a minute does not.
    """
    end = samples[-1]["t"]
    return statistics.median(s[key] for s in samples if s["t"] >= end - span_s)


def verdict(samples: list[dict], lost: list[int], faults: list[dict]) -> list[str]:
    """The reasons the soak failed (empty: it passed).

    Growth is judged on levels: the median over the first minute after the warm-up against the median over the
    last minute (memory may grow 10 % + 256 MiB, descriptors and threads 64), so a fault's transient worker is
    not a leak and a leak cannot hide behind one.
    """
    later = [s for s in samples if s["t"] >= WARMUP_S] or samples
    first = [s for s in later if s["t"] <= later[0]["t"] + LEVEL_SPAN_S]
    bad = []
    for key, bound in (("rss_mb", lambda b: b * 1.10 + 256), ("fds", lambda b: b + 64), ("threads", lambda b: b + 64)):
        base, end = _level(first, key), _level(later, key)
        if end > bound(base):
            bad.append(f"{key} level grew {base:g} -> {end:g} (bound {bound(base):g})")
    if lost:
        bad.append(f"events lost: {lost}")
    bad += [f"fault {f['kind']} at {f['t']} s: not recovered ({f['error']})" for f in faults if f.get("error")]
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--fault-every-s", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    soak = Soak(Path(tempfile.mkdtemp(prefix="vad-soak-")), args.cameras)
    samples, faults, seen = [], [], set()
    t0 = time.monotonic()
    next_fault, i = args.fault_every_s, 0
    try:
        while (t := time.monotonic() - t0) < args.minutes * 60:
            s = soak.sample(t)
            seen |= set(s["event_ids"])
            samples.append(s)
            print(json.dumps({k: v for k, v in s.items() if k not in ("event_ids", "rss_mb_by_process")}), file=sys.stderr, flush=True)
            if t >= next_fault:
                kind = FAULTS[i % len(FAULTS)]
                entry = {"kind": kind, "t": round(t, 1)}
                try:
                    soak.fault(kind)
                    entry["recovered_s"] = round(soak.recovered(), 1)
                except Exception as exc:  # noqa: BLE001 - a fault the service did not survive is a failed row
                    entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
                faults.append(entry)
                print(json.dumps(entry), file=sys.stderr, flush=True)
                i += 1
                next_fault = time.monotonic() - t0 + args.fault_every_s
            time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t0 - t)))
        learn_error = None
        try:
            soak.learn_done(LEARN_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - reported in the verdict
            learn_error = f"{type(exc).__name__}: {exc}"[:300]
        r = wait_for(lambda: (x := soak.api.get("/events?limit=10000")).status_code == 200 and x, 60, "events")
        final = set(e["id"] for e in r.json())
    finally:
        soak.stop()
    lost = sorted(seen - final)
    bad = verdict(samples, lost, faults) + ([f"learn jobs: {learn_error}"] if learn_error else [])
    first, last = samples[0], samples[-1]
    keys = ("rss_mb", "fds", "threads", "db_bytes", "lag_s", "windows_dropped", "alerts")
    print("| at | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    peak = {k: max(s[k] for s in samples) for k in keys}
    rows = ((f"start ({first['t']} s)", first), (f"end ({last['t']} s)", last), ("peak (any time)", peak))
    for label, s in rows:
        print(f"| {label} | " + " | ".join(str(s[k]) for k in keys) + " |")
    growth = {n: round(last["rss_mb_by_process"].get(n, 0.0) - first["rss_mb_by_process"].get(n, 0.0), 1)
              for n in set(first["rss_mb_by_process"]) | set(last["rss_mb_by_process"])}
    print("RSS change by process, start to end (MB): "
          + ", ".join(f"{n} {g:+g}" for n, g in sorted(growth.items(), key=lambda x: -abs(x[1]))[:6]))
    survived = sum("error" not in f for f in faults)
    print(f"\n{args.cameras} cameras, {args.minutes:g} min; faults survived {survived}/{len(faults)} "
          f"({', '.join(f['kind'] + ' ' + str(f.get('recovered_s', 'no')) + ' s' for f in faults)}); "
          f"learn jobs {sum(j['state'] == 'done' for j in soak.learn_jobs)}/{len(soak.learn_jobs)} done; "
          f"events seen {len(seen)}, lost {len(lost)}; {'PASS' if not bad else 'FAIL: ' + '; '.join(bad)}")
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "faults": faults, "events_seen": len(seen), "events_lost": lost,
                                               "learn_jobs": soak.learn_jobs,
                                               "verdict": bad}, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
