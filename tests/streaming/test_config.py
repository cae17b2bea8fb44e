"""streaming/config.py: the shipped deploy file validates; bad values fail naming the field, secrets scrubbed."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from offline.cli import main as vad_main
from offline.config import ConfigError
from streaming.config import (
    AlertConfig,
    CameraConfig,
    ServiceConfig,
    load_service_config,
    parse_service_config,
)
from streaming.credentials import scrub_url

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "config.yaml"


def test_shipped_deploy_config_validates():
    cfg = load_service_config(DEPLOY)
    assert [c.name for c in cfg.cameras] == ["demo"]
    assert cfg.cameras[0].url.startswith("demo://")
    assert cfg.http.host == "127.0.0.1"
    assert ipaddress.ip_address(cfg.http.host).is_loopback


def test_defaults_bind_loopback_and_have_no_cameras():
    cfg = ServiceConfig()
    assert cfg.http.host == "127.0.0.1" and cfg.cameras == []
    assert cfg.scorer.devices == "auto" and cfg.http.resolve_token() is None


def test_check_config_cli_accepts_deploy_file(capsys):
    assert vad_main(["check-config", str(DEPLOY)]) == 0
    assert "OK (service config)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("patch", "field", "fragment"),
    [
        ({"cameras": [{"name": "a b", "url": "demo://x"}]}, "cameras.0.name", "pattern"),
        ({"cameras": [{"name": "a", "url": "http://cam/x"}]}, "cameras.0.url", "unsupported URL scheme 'http'"),
        ({"cameras": [{"name": "a", "url": "rtsp:///nohost"}]}, "cameras.0.url", "no host"),
        ({"cameras": [{"name": "a", "url": "demo://x", "fps": 0}]}, "cameras.0.fps", "greater than 0"),
        ({"cameras": [{"name": "a", "url": "demo://x", "transport": "sctp"}]}, "cameras.0.transport", "'tcp' or 'udp'"),
        ({"cameras": [{"name": "a", "url": "demo://x", "colour": 1}]}, "cameras.0.colour", "unknown key"),
        ({"cameras": [{"name": "a", "url": "demo://x"}, {"name": "a", "url": "demo://y"}]}, "cameras", "appears twice"),
        ({"scorer": {"max_batch": 0}}, "scorer.max_batch", "greater than or equal to 1"),
        ({"scorer": {"devices": ["gpu0"]}}, "scorer.devices", "'gpu0'"),
        ({"alerts": {"threshold": 1.5}}, "alerts.threshold", "less than or equal to 1"),
        ({"http": {"port": 70000}}, "http.port", "less than or equal to 65535"),
    ],
)
def test_bad_values_name_the_field(patch, field, fragment):
    with pytest.raises(ConfigError) as info:
        parse_service_config(patch, "x.yaml")
    msg = str(info.value)
    assert f"  {field}: " in msg and fragment in msg, msg


def test_errors_never_echo_camera_passwords():
    bad = {"cameras": [{"name": "a", "url": "rtsp://admin:hunter2@10.0.0.9/live", "fps": -1}]}
    with pytest.raises(ConfigError) as info:
        parse_service_config(bad)
    assert "hunter2" not in str(info.value) and "cameras.0.fps" in str(info.value)
    cam = CameraConfig(name="a", url="rtsp://admin:hunter2@10.0.0.9/live")
    assert cam.public()["url"] == "rtsp://***@10.0.0.9/live"
    assert scrub_url("x rtsps://u:p@h:554/a and rtsp://h/b") == "x rtsps://***@h:554/a and rtsp://h/b"


def test_serve_file_errors_carry_the_application_path(tmp_path):
    data = yaml.safe_load(DEPLOY.read_text())
    data["applications"][0]["args"]["scorer"]["max_wait_ms"] = -5
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"applications\.0\.args\.scorer\.max_wait_ms"):
        load_service_config(path)


def test_http_options_must_agree_with_app_host(tmp_path):
    data = yaml.safe_load(DEPLOY.read_text())
    data["http_options"]["host"] = "0.0.0.0"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"http_options\.host is '0\.0\.0\.0'"):
        load_service_config(path)
    assert vad_main(["check-config", str(path)]) == 2


def test_camera_overrides_and_env_prefix(monkeypatch):
    cam = CameraConfig(name="gate-2", url="rtsp://10.0.0.9/live", threshold=0.9)
    eff = cam.alert_settings(AlertConfig(threshold=0.5, min_duration_s=2.0))
    assert (eff.threshold, eff.min_duration_s) == (0.9, 2.0)
    assert cam.env_prefix == "VAD_CAMERA_GATE_2"
    cfg = ServiceConfig(http={"token_env": "VAD_TEST_TOKEN"})
    monkeypatch.delenv("VAD_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="VAD_TEST_TOKEN"):
        cfg.http.resolve_token()
    monkeypatch.setenv("VAD_TEST_TOKEN", "s3cret")
    assert cfg.http.resolve_token() == "s3cret"


def test_camera_bundle_overrides_the_default_inside_the_bundle_roots(tmp_path):
    from streaming.config import resolve_paths

    models = tmp_path / "models"
    (models / "door").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (models / "escape").symlink_to(tmp_path / "elsewhere")  # inside the roots, but leads out of them
    scorer = {"bundle": str(models / "default")}  # roots: its directory
    cfg = parse_service_config({"scorer": scorer, "cameras": [
        {"name": "door", "url": "demo://d", "bundle": str(models / "door")}, {"name": "hall", "url": "demo://h"}]})
    assert cfg.scorer.camera_bundle(cfg.cameras[0]) == str(models / "door") and cfg.cameras[1].bundle is None
    assert cfg.scorer.max_bundles == 8
    for bad in (models / "escape", f"{models}/../elsewhere", "/etc"):
        with pytest.raises(ConfigError) as info:
            parse_service_config({"scorer": scorer, "cameras": [{"name": "door", "url": "demo://d", "bundle": str(bad)}]})
        msg = str(info.value)
        assert "  cameras.0.bundle: " in msg and f"scorer.bundle_roots: ['{models}']" in msg, msg
    with pytest.raises(ConfigError, match=r"scorer\.max_bundles"):
        parse_service_config({"scorer": {"max_bundles": 0}})
    rel = ServiceConfig(scorer={"bundle": "models/default"}, cameras=[{"name": "door", "url": "demo://d",
                                                                       "bundle": "models/door"}])
    assert resolve_paths(rel, tmp_path).cameras[0].bundle == models / "door"  # like scorer.bundle
