"""Scenario 8, configuration half: malformed variants of the shipped deploy/config.yaml are refused with an error
that names the field (and never echoes a credential); `vad check-config` exits non-zero on them."""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from offline.config import ConfigError
from streaming.config import load_service_config
from tests.faults.tools.watch import CAM_PASSWORD, CAM_USER, find_secrets

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "config.yaml"
ARGS = "applications.0.args."
SECRET_URL = f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:8554/cam"


def _args(cfg: dict) -> dict:
    return cfg["applications"][0]["args"]


def _cam(cfg: dict) -> dict:
    return _args(cfg)["cameras"][0]


def _set(path: str, value):
    """Mutation that sets `args.<path>` (dots; integers index lists), creating missing mappings."""

    def mutate(cfg: dict) -> None:
        node = _args(cfg)
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
        _args(cfg)["cameras"].append(cam)

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
    ("token_and_token_env", lambda c: _args(c)["http"].update(token="t", token_env="VAD_T"), "token or token_env", None),
    ("http_host_mismatch", _set("http.host", "0.0.0.0"), "http_options.host", "'127.0.0.1'"),
    ("no_app", _top("applications", []), "applications must be a non-empty list", None),
]


@pytest.fixture(scope="module")
def shipped() -> dict:
    cfg = yaml.safe_load(SHIPPED.read_text())
    load_service_config(SHIPPED)  # the baseline itself is valid
    return cfg


@pytest.mark.parametrize("case_id, mutate, field, bad", CASES, ids=[c[0] for c in CASES])
def test_malformed_service_config_names_the_field(tmp_path, shipped, case_id, mutate, field, bad):
    cfg = copy.deepcopy(shipped)
    mutate(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as err:
        load_service_config(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert field in msg, msg
    if bad is not None:
        assert bad in msg, msg
    assert not find_secrets(msg), msg


@pytest.mark.parametrize(
    "text, expect",
    [
        ("cameras: [\n  - name: a\n    url: demo://x\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
    ids=["broken_yaml", "top_level_list"],
)
def test_unparseable_config_files(tmp_path, text, expect):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expect):
        load_service_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_service_config(tmp_path / "nope.yaml")


def test_check_config_cli_exit_codes(tmp_path, shipped):
    """`vad check-config` passes the shipped file and fails a bad one, naming the field, without the password."""
    vad = REPO / ".venv" / "bin" / "vad"
    ok = subprocess.run([str(vad), "check-config", str(SHIPPED)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    cfg = copy.deepcopy(shipped)
    _cam(cfg)["url"] = f"http://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1/x"
    _cam(cfg)["fps"] = -3
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(cfg))
    bad = subprocess.run([str(vad), "check-config", str(bad_path)], capture_output=True, text=True, timeout=60)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0, out
    assert ARGS + "cameras.0.url" in out and ARGS + "cameras.0.fps" in out, out
    assert not find_secrets(out), out
