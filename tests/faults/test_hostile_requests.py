"""Hostile and clumsy requests against the real service (Ray Serve proxy, the control-plane replica, real actors):
the probe table of tests/faults/probes.py, and bodies that used to take the API down (issue 23): a 2 MB chunked
body is refused within a second, with or without the token, a body that never finishes is cut off, and /healthz
keeps answering throughout."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from tests.faults import probes
from tests.faults.tools.watch import API_TOKEN

pytestmark = pytest.mark.slow
TWO_MB = b'{"label": "' + b"x" * (2 * 1024 * 1024) + b'"}'


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from ray import serve

    svc, port = probes.start_service(tmp_path_factory.mktemp("probes"))
    svc.port = port
    yield svc
    serve.delete(probes.APP)


@pytest.mark.parametrize("probe", probes.PROBES, ids=[p.id for p in probes.PROBES])
def test_probe_answered_right(service, probe):
    ok, got = probes.answer(service, probe)
    assert ok, f"{probe.method} {probe.path!r}: want {probe.status} with {probe.text!r}, got {got}"


class HealthWatch:
    """Polls /healthz every 0.1 s in a thread; the slowest answer and any failure."""

    def __init__(self, base: str):
        self.base, self.worst_s, self.failures, self.polls = base, 0.0, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                code = requests.get(self.base + "/healthz", timeout=10).status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            self.worst_s = max(self.worst_s, time.monotonic() - t0)
            self.polls += 1
            if code != 200:
                self.failures.append(code)
            self._stop.wait(0.1)

    def __enter__(self) -> "HealthWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.mark.parametrize("token, status", [(None, 401), (API_TOKEN, 413)], ids=["no_token", "token"])
def test_chunked_2mb_body_refused_within_a_second_while_healthz_answers(service, token, status):
    path = probes.PREFIX + "/events/31/label"
    with HealthWatch(service.base) as watch:
        for _ in range(3):  # the replacement replica used to hang on the second such request
            got, took = probes.raw_post(service.port, path, TWO_MB, token=token)
            assert got == status and took < 1.0, (got, took)
        time.sleep(0.5)
    assert not watch.failures and watch.polls >= 5 and watch.worst_s < 1.0, (watch.failures, watch.polls, watch.worst_s)
    assert service.get("/healthz", auth=False).status_code == 200


def test_body_that_never_finishes_is_cut_off(service):
    """A client that sends 1 KiB of a chunked body and then nothing: 408 after the body timeout, /healthz fine."""
    from streaming.app import BODY_TIMEOUT_S

    with HealthWatch(service.base) as watch:
        got, took = probes.raw_post(service.port, probes.PREFIX + "/cameras", TWO_MB, token=API_TOKEN,
                                    stall_after=1024)
    assert got == 408 and BODY_TIMEOUT_S - 0.5 < took < BODY_TIMEOUT_S + 3, (got, took)
    assert not watch.failures and watch.worst_s < 1.0, (watch.failures, watch.worst_s)


def test_service_unchanged_and_no_traceback_after_the_probes(service):
    """Nothing the probes sent changed the fleet (the one camera, still scored) or raised in the replica (no 500:
    its log holds no traceback)."""
    import ray

    from tests.polling import wait_for

    names = [c["name"] for c in service.get("/cameras").json()]
    assert names == ["alerting"], names
    n0 = service.camera("alerting")["frames_scored"]
    wait_for(lambda: service.camera("alerting")["frames_scored"] > n0, 30, "more frames scored", every_s=0.5)
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    replica_logs = list(logs.glob(f"replica_{probes.APP}_ControlPlane_*.log"))
    assert replica_logs
    raised = [f.name for f in replica_logs if "Traceback" in f.read_text(errors="replace")]
    assert not raised, f"the control plane raised while probed: {raised}"
