"""deploy/: the shipped Prometheus, rules, Alertmanager and Grafana files, checked by the real tools.

The live test starts Debian's Prometheus and Alertmanager on 127.0.0.1, serves real `VadMetrics` with
prometheus_client's own server, lets the shipped rules (with `for:` shortened) fire, reads the alerts back
from Prometheus' API and from a webhook the test runs, and executes every PromQL expression of the rules
and the Grafana dashboard. No Ray: SERVICE's end-to-end test covers the real app's /metrics.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client import start_http_server

from streaming.prometheus import METRIC_NAMES, VadMetrics
from tests import polling

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = sorted((DEPLOY / "rules").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "vad.json"
# Grafana's built-in variables, replaced by values Prometheus accepts (scrapes are 1 s apart in the live test).
GRAFANA_VARS = {"$__rate_interval": "10s", "$__interval": "2s", "$__range": "1m", "$camera": ".*"}


def tool(name: str) -> str:
    """Path of a Debian Prometheus tool; a clear failure (not a skip) when missing: CI installs them."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(
            f"{name} not found: install Debian's prometheus and prometheus-alertmanager packages "
            "(`deploy/install.sh --test` or .ci/run does; see ../shared/INFRA.md)"
        )
    return path


def check(cmd: list[str], cwd: Path = REPO) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def rule_exprs() -> list[tuple[str, str]]:
    out = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append((f"{path.name}:{rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every panel target and Prometheus annotation of the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    out = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(f"annotation {a['name']!r}", a["expr"]) for a in dash["annotations"]["list"] if "expr" in a]
    return out


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


# -- static checks with the real tools -------------------------------------------------------------------


def test_promtool_checks_config_and_rules():
    promtool = tool("promtool")
    out = check([promtool, "check", "config", str(DEPLOY / "prometheus.yml")])
    assert "SUCCESS" in out and "rule files found" in out
    check([promtool, "check", "rules", *map(str, RULES)])


def test_promtool_rule_unit_tests_pass():
    promtool = tool("promtool")
    tests = sorted((DEPLOY / "rules" / "tests").glob("*.yml"))
    assert tests, "no promtool rule unit tests in deploy/rules/tests"
    out = check([promtool, "test", "rules", *map(str, tests)], cwd=DEPLOY / "rules" / "tests")
    assert "SUCCESS" in out


def test_amtool_checks_alertmanager_config():
    out = check([tool("amtool"), "check-config", str(DEPLOY / "alertmanager.yml")])
    assert "SUCCESS" in out


def test_scrape_target_is_the_shipped_service_port():
    """deploy/prometheus.yml scrapes the port `serve run deploy/config.yaml` listens on, on loopback."""
    serve = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "vad"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"127.0.0.1:{serve['http_options']['port']}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_rules_and_dashboard_use_only_declared_metric_names():
    declared = set(METRIC_NAMES) | {"up"}
    for where, expr in rule_exprs() + dashboard_exprs():
        for name in re.findall(r"\bvad_[a-z_]+\b", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in declared or base in declared, f"{where}: unknown metric {name} in {expr!r}"


def test_every_alert_rule_has_severity_summary_and_description():
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                    assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_grafana_provisioning_matches_the_dashboard():
    prov = DEPLOY / "grafana" / "provisioning"
    (ds,) = yaml.safe_load((prov / "datasources" / "vad.yml").read_text())["datasources"]
    (provider,) = yaml.safe_load((prov / "dashboards" / "vad.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == ds["uid"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == ds["uid"], p["title"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("anomaly score", "frames per second", "lag", "dropped", "reconnects"):
        assert needed in titles, f"dashboard lacks a {needed!r} panel"
    assert any(a.get("expr") and "vad_alert_active" in a["expr"] for a in dash["annotations"]["list"])


# -- live: real Prometheus + Alertmanager + webhook ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_for(cond, timeout: float, what: str, logs: list[Path] = ()):
    """`tests.polling.wait_for` through "not listening yet", failing with the services' log tails."""
    def tails() -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]) for p in logs)

    return polling.wait_for(cond, timeout, what, every_s=0.25, retry_on=(OSError,), detail=tails)


class Webhook:
    """A webhook receiver on 127.0.0.1 recording Alertmanager's JSON posts."""

    def __init__(self):
        self.posts: list[dict] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/vad-alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, status: str) -> list[dict]:
        return [a for p in list(self.posts) for a in p["alerts"] if a["status"] == status]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Ticker:
    """Moves the metrics like a running service: frames decoded and scored, latencies, scorer batches."""

    def __init__(self, m: VadMetrics, cameras: list[str]):
        self.m, self.cameras = m, cameras
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        scorer = self.m.scorer("cpu")
        scorer.up.set(1)
        while not self.stop_event.wait(0.2):
            for name in self.cameras:
                cam = self.m.camera(name)
                cam.frames_decoded.inc(2)
                cam.decode_latency.observe(0.004)
                cam.frames_scored.inc(2)
                cam.score_latency.observe(0.8)
                cam.lag.set(0.9)
                cam.queue_depth.set(1)
            scorer.observe_batch(len(self.cameras), 0.3)
            scorer.set_busy(0.6)
            scorer.queue_depth.set(0)

    def stop(self):
        self.stop_event.set()
        self.thread.join()


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=log.parent)
    proc._log = fh  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc._log.close()  # type: ignore[attr-defined]


@pytest.fixture
def stack(tmp_path):
    """VadMetrics on a prometheus_client server, a webhook, Alertmanager and Prometheus (1 s intervals)."""
    prometheus, alertmanager = tool("prometheus"), tool("prometheus-alertmanager")
    m = VadMetrics(version="test")
    for name in ("door", "gate"):
        m.camera(name).set_state("streaming")
        m.camera(name).observe_score(0.2, warm=True)
        m.camera(name).set_alert(False)
    metrics_server = ticker = hook = None
    procs: list[subprocess.Popen] = []
    try:
        metrics_server, _ = start_http_server(0, addr="127.0.0.1", registry=m.registry)
        ticker = Ticker(m, ["door", "gate"])
        hook = Webhook()
        am_cfg = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
        for receiver in am_cfg["receivers"]:
            for wh in receiver.get("webhook_configs", []):
                wh["url"] = hook.url
        am_cfg["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg))
        am_port, prom_port = free_port(), free_port()
        am_log, prom_log = tmp_path / "alertmanager.log", tmp_path / "prometheus.log"
        procs.append(start([
            alertmanager, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ], am_log))

        rules_dir = tmp_path / "rules"
        rules_dir.mkdir()
        for path in RULES:  # the shipped rules with `for:` shortened so the test does not wait minutes
            doc = yaml.safe_load(path.read_text())
            for group in doc["groups"]:
                for rule in group["rules"]:
                    if "for" in rule:
                        rule["for"] = "1s"
            (rules_dir / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        prom_cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        prom_cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        prom_cfg["rule_files"] = [str(rules_dir / "*.yml")]
        prom_cfg["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{am_port}"]}]
        (job,) = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "vad"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_server.server_port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
        procs.append(start([
            prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], prom_log))
        prom = f"http://127.0.0.1:{prom_port}"
        logs = [prom_log, am_log]
        wait_for(lambda: urllib.request.urlopen(f"{prom}/-/ready", timeout=2).status == 200, 30, "Prometheus ready", logs)
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{am_port}/-/ready", timeout=2).status == 200,
            30, "Alertmanager ready", logs,
        )
        yield {"metrics": m, "prom": prom, "hook": hook, "logs": logs}
    finally:
        for p in procs:
            stop(p)
        if ticker is not None:
            ticker.stop()
        if hook is not None:
            hook.close()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()


def query(prom: str, expr: str) -> dict:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return get_json(url)
    except urllib.error.HTTPError as exc:  # a bad expression is a 400 with a JSON error body
        return json.loads(exc.read())


def firing(prom: str) -> list[dict]:
    return [a for a in get_json(f"{prom}/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]


@pytest.mark.slow
def test_rules_fire_and_alertmanager_delivers_to_the_webhook(stack):
    m, prom, hook, logs = stack["metrics"], stack["prom"], stack["hook"], stack["logs"]
    wait_for(
        lambda: len(query(prom, "vad_camera_up == 1")["data"]["result"]) == 2
        and len(query(prom, "vad_frames_decoded_total")["data"]["result"]) == 2,
        30, "both cameras scraped", logs,
    )
    door, gate = m.camera("door"), m.camera("gate")
    door.observe_score(0.97, warm=True)
    door.set_alert(True)
    gate.set_state("reconnecting")

    def alerts_up():
        names = {(a["labels"]["alertname"], a["labels"].get("camera")) for a in firing(prom)}
        return names if {("VadAnomaly", "door"), ("VadCameraDown", "gate")} <= names else None

    names = wait_for(alerts_up, 30, "VadAnomaly(door) and VadCameraDown(gate) firing in /api/v1/alerts", logs)
    assert ("VadAnomaly", "gate") not in names
    assert not {n for n, _ in names} & {"VadScorerDown", "VadServiceDown", "VadScorerBehind"}, names

    delivered = wait_for(
        lambda: [a for a in hook.alerts("firing") if a["labels"]["alertname"] == "VadAnomaly"],
        30, "Alertmanager posting VadAnomaly to the webhook", logs,
    )
    alert = delivered[0]
    assert alert["labels"]["camera"] == "door" and alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "Anomaly on camera door"
    assert "anomaly score 0.97" in alert["annotations"]["description"]
    assert "rtsp" not in json.dumps(hook.posts)

    # every PromQL expression of the rules and the dashboard runs without error; panels return data
    for where, expr in rule_exprs():
        res = query(prom, expr)
        assert res["status"] == "success", f"{where}: {expr!r}: {res.get('error')}"
    for where, expr in dashboard_exprs():
        res = query(prom, grafana_to_promql(expr))
        assert res["status"] == "success", f"{where}: {expr!r}: {res.get('error')}"
        assert res["data"]["result"], f"{where}: {expr!r} returned no series"
    cameras = get_json(f"{prom}/api/v1/label/camera/values?" + urllib.parse.urlencode({"match[]": "vad_camera_up"}))
    assert set(cameras["data"]) == {"door", "gate"}  # the dashboard's $camera variable

    door.set_alert(False)
    wait_for(
        lambda: [a for a in hook.alerts("resolved") if a["labels"]["alertname"] == "VadAnomaly"],
        30, "the resolved VadAnomaly at the webhook", logs,
    )
