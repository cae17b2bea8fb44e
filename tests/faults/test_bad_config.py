"""Scenario 8, configuration half: malformed variants of the shipped deploy/config.yaml are refused with an error
that names the field (and never echoes a credential); `vad check-config` exits non-zero on them. The variants
(`CASES`) live in tests/faults/scenarios.py, shared with bench/faults.py."""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from offline.config import ConfigError
from streaming.config import load_service_config
from tests.faults.scenarios import ARGS, CASES, SHIPPED, first_camera, refused_config
from tests.faults.tools.watch import CAM_PASSWORD, CAM_USER, find_secrets

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped() -> dict:
    cfg = yaml.safe_load(SHIPPED.read_text())
    load_service_config(SHIPPED)  # the baseline itself is valid
    return cfg


@pytest.mark.parametrize("case_id, mutate, field, bad", CASES, ids=[c[0] for c in CASES])
def test_malformed_service_config_names_the_field(tmp_path, shipped, case_id, mutate, field, bad):
    path = tmp_path / "config.yaml"
    msg = refused_config(shipped, mutate, path)
    assert msg is not None, f"{case_id}: the malformed config loaded"
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
    first_camera(cfg)["url"] = f"http://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1/x"
    first_camera(cfg)["fps"] = -3
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(cfg))
    bad = subprocess.run([str(vad), "check-config", str(bad_path)], capture_output=True, text=True, timeout=60)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0, out
    assert ARGS + "cameras.0.url" in out and ARGS + "cameras.0.fps" in out, out
    assert not find_secrets(out), out
