"""Config: unknown keys and bad values are errors that name the field path and the value; check-config exits non-zero."""
import subprocess
import sys

import pytest

from offline.cli import main
from offline.config import ConfigError, load_config


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("data:\n  sise: 256\n", "data.sise: unknown key"),
        ("scoring:\n  weights: [0.5, 0.25, 0.1]\n", "scoring.weights: weights must sum to 1"),
        ("flow:\n  warps: zero\n", "flow.warps: Input should be a valid integer"),
        ("pa:\n  p_spatial: 1.5\n", "pa.p_spatial: Input should be less than or equal to 1 (got 1.5)"),
        ("pa:\n  mask_min_coverage: 0.5\n  mask_max_coverage: 0.1\n", "mask_min_coverage (0.5) must not exceed"),
        ("train:\n  epochs: 0\n", "train.epochs: Input should be greater than or equal to 1 (got 0)"),
        ("model:\n  disc_features: spatial_encoder\n", "model.disc_spatial_run: required when model.disc_features is 'spatial_encoder'"),
        ("model:\n  disc_features: resnet\n", "model.disc_features: Input should be 'clip' or 'spatial_encoder'"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("data: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, yaml_text, message):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert message in str(exc.value)
    assert main(["check-config", str(f)]) == 2


def test_defaults_follow_method(tmp_path):
    cfg = load_config(None)
    assert cfg.scoring.weights == (0.65, 0.25, 0.1)
    assert (cfg.flow.tau, cfg.flow.lambda_, cfg.flow.theta, cfg.flow.scales, cfg.flow.warps) == (0.25, 0.15, 0.3, 5, 5)
    assert (cfg.pa.p_spatial, cfg.pa.p_temporal, cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (0.4, 0.5, 1e-4, 25, 24)
    f = tmp_path / "ok.yaml"
    f.write_text("flow:\n  lambda: 0.2\nscoring:\n  normaliser: running\n")
    assert load_config(f).flow.lambda_ == 0.2


def test_check_config_cli_exit_codes(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("data:\n  size: 128\n")
    bad.write_text("data:\n  size: 5\n")
    ok = subprocess.run([sys.executable, "-m", "offline.cli", "check-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    ko = subprocess.run([sys.executable, "-m", "offline.cli", "check-config", str(bad)], capture_output=True, text=True)
    assert ko.returncode == 2 and "data.size" in ko.stdout and "(got 5)" in ko.stdout
    missing = subprocess.run([sys.executable, "-m", "offline.cli", "check-config", str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such file" in missing.stdout
