"""`vad export`: bundles from tiny training runs; identical scores after reload; the discriminator's status."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from offline.models.discriminator import build_discriminator
from offline.scoring.bundle import Bundle, load_bundle, sha256_file
from offline.scoring.detector import Detector
from offline.training.disc_loop import train_discriminator
from offline.training.export import export
from offline.training.ae_loop import train_autoencoder
from safetensors.torch import load_file, save_file
from tests.offline.training.synthetic import synthetic_data, tiny_config

PED2 = (0.65, 0.25, 0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny spatial run (our spatial PAs) and temporal run (flow mix-up) on the same synthetic clips."""
    root = tmp_path_factory.mktemp("runs")
    data = synthetic_data(clips=2, n_frames=48)
    common = dict(train__max_steps=2, train__holdout_fraction=0.3, flow__clip=3.0)
    spatial = train_autoencoder(tiny_config(root / "spatial", pa__spatial="ldm", **common), progress=False, data=data)
    temporal = train_autoencoder(tiny_config(root / "temporal", train__target="temporal", pa__temporal="flow_mixup",
                                             **common), progress=False, data=data)
    return root, data, spatial, temporal


def test_exported_bundle_scores_identically_after_reload(runs, tmp_path):
    root, data, spatial, temporal = runs
    out = export(root / "spatial", tmp_path / "bundle", root / "temporal", data=data)
    loaded = load_bundle(out)
    assert loaded.config.input.size == 32 and loaded.config.flow.clip == 3.0
    in_memory = Detector(Bundle(None, loaded.config, spatial.model.eval(), temporal.model.eval()))
    reloaded = Detector.load(out)
    windows = torch.stack([data[0].get(np.arange(s, s + 16)) for s in (0, 8, 16)])
    a, b = in_memory.score(windows), reloaded.score(windows)
    np.testing.assert_array_equal(a.psnr, b.psnr)
    np.testing.assert_array_equal(a.flow_error, b.flow_error)
    c = Detector.load(out).score(windows)  # and again: loading is deterministic
    np.testing.assert_array_equal(b.psnr, c.psnr)
    np.testing.assert_array_equal(b.flow_error, c.flow_error)


def test_calibration_on_held_out_normal_windows(runs, tmp_path):
    root, data, *_ = runs
    cfg = load_bundle(export(root / "spatial", tmp_path / "b", root / "temporal", data=data)).config
    cal = cfg.calibration
    # holdout 0.3 of 48 frames -> the last 16 frames of each clip: one window each
    assert cal.frames == 2 * 16
    assert set(cal.components) == {"w1", "w2"}
    assert all(np.isfinite(v).all() and v[1] >= 0 for v in map(np.array, cal.components.values()))
    assert cal.components["w1"][0] < 0  # w1 = -PSNR
    q = [cal.score_quantiles[k] for k in ("0.5", "0.9", "0.95", "0.99", "0.999")]
    assert q == sorted(q) and 0 <= q[0] and q[-1] <= 1


def test_discriminator_without_weights_is_reported_off(runs, tmp_path, caplog):
    root, data, *_ = runs
    with caplog.at_level(logging.WARNING):
        result = train_discriminator(tiny_config(tmp_path / "d", train__target="discriminator"), data=data)
    assert result.model is None and result.status.startswith("off: model.clip_model_path is not set")
    assert any("clip_model_path is not set" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "d" / "discriminator.json").read_text())["status"] == result.status

    out = export(root / "spatial", tmp_path / "bundle", root / "temporal", tmp_path / "d", data=data)
    cfg = load_bundle(out).config
    assert not cfg.discriminator and cfg.discriminator_status == result.status
    np.testing.assert_allclose(cfg.scoring.weights, (0.65 / 0.9, 0.25 / 0.9, 0.0))
    assert cfg.notes["weights_requested"] == list(PED2)
    det = Detector.load(out)
    assert det.available == (True, True, False) and det.score(torch.zeros(1, 3, 16, 32, 32)).disc_prob is None

    spatial_only = load_bundle(export(root / "spatial", tmp_path / "b2", data=data)).config
    assert spatial_only.scoring.weights == (1.0, 0.0, 0.0) and spatial_only.discriminator_status.startswith("off")


def test_discriminator_trains_on_a_tiny_clip_model_and_ships_in_the_bundle(runs, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root, data, *_ = runs
    torch.manual_seed(0)
    clip_dir = tmp_path / "clip"
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8,
        projection_dim=512)).save_pretrained(clip_dir)
    cfg = tiny_config(tmp_path / "d", train__target="discriminator", model__clip_model_path=str(clip_dir),
                      train__d_epochs=3, pa__mask="random")
    result = train_discriminator(cfg, data=data, progress=False, max_windows=4)
    assert result.status == "on" and result.model is not None and 0 <= result.accuracy <= 1
    out = export(root / "spatial", tmp_path / "bundle", root / "temporal", tmp_path / "d", data=data)
    bundle = load_bundle(out)
    assert bundle.config.discriminator and bundle.config.discriminator_status == "on"
    np.testing.assert_allclose(bundle.config.scoring.weights, PED2)
    for (k, a), b in zip(result.model.state_dict().items(), bundle.discriminator.state_dict().values()):
        assert torch.equal(a, b), k
    ws = Detector(bundle).score(torch.stack([data[0].get(np.arange(16))]))
    assert ws.disc_prob.shape == (1, 16) and ((ws.disc_prob >= 0) & (ws.disc_prob <= 1)).all()
    assert set(bundle.config.calibration.components) == {"w1", "w2", "w3"}


@pytest.fixture(scope="module")
def encoder_disc(runs):
    """A discriminator on the frozen encoder of the tiny spatial run (no CLIP weights anywhere)."""
    root, data, *_ = runs
    cfg = tiny_config(root / "d_enc", train__target="discriminator", model__disc_features="spatial_encoder",
                      model__disc_spatial_run=str(root / "spatial"), train__d_epochs=3, pa__mask="random")
    assert cfg.model.clip_model_path is None
    return train_discriminator(cfg, data=data, progress=False)


def test_discriminator_trains_on_the_frozen_spatial_encoder(runs, encoder_disc):
    root, *_ = runs
    before = sha256_file(root / "spatial" / "weights.safetensors")
    assert encoder_disc.status == "on" and encoder_disc.model.net[0].in_features == 2 * 16  # channels (8, 8, 16)
    record = json.loads((root / "d_enc" / "discriminator.json").read_text())
    assert record["features"] == "spatial_encoder" and record["spatial_run"] == str(root / "spatial")
    assert record["spatial_sha256"] == before and record["in_features"] == 32
    # 2 clips x 48 frames: 6 non-overlapping windows; every fifth (index 4) is held out with its PA
    assert (record["windows"], record["heldout_windows"], record["slices_per_window"]) == (6, 1, 2)
    assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["heldout_accuracy"] <= 1
    assert record["train_accuracy"] == encoder_disc.accuracy and record["heldout_accuracy"] == encoder_disc.heldout_accuracy
    tensors = load_file(str(root / "d_enc" / "discriminator.safetensors"))
    build_discriminator("spatial_encoder", 32).load_state_dict({k.removeprefix("discriminator."): v for k, v in tensors.items()}, strict=True)
    assert sha256_file(root / "spatial" / "weights.safetensors") == before  # the encoder stayed frozen


def test_export_refuses_a_spatial_encoder_discriminator_beside_another_spatial_run(runs, encoder_disc, tmp_path, capsys):
    from offline.cli import main

    root, data, *_ = runs
    other = tmp_path / "spatial2"
    shutil.copytree(root / "spatial", other)
    tensors = load_file(str(other / "weights.safetensors"))
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key] = tensors[key] + 0.01
    save_file(tensors, str(other / "weights.safetensors"))
    with pytest.raises(ValueError) as exc:
        export(other, tmp_path / "bundle", discriminator_run=root / "d_enc", data=data)
    assert str(other) in str(exc.value) and str(root / "spatial") in str(exc.value)
    assert not (tmp_path / "bundle").exists()
    assert main(["export", "--spatial", str(other), "--discriminator", str(root / "d_enc"), "--out", str(tmp_path / "b")]) == 2
    assert "the discriminator was trained on the encoder of" in capsys.readouterr().err


def test_spatial_encoder_discriminator_ships_and_scores_w3_per_frame(runs, encoder_disc, tmp_path):
    from streaming.bundle_set import load_detector

    root, data, *_ = runs
    out = export(root / "spatial", tmp_path / "bundle", root / "temporal", root / "d_enc", data=data)
    bundle = load_bundle(out)
    cfg = bundle.config
    assert cfg.discriminator and cfg.discriminator_status == "on" and cfg.clip_model_path is None
    assert (cfg.discriminator_features, cfg.discriminator_in_features) == ("spatial_encoder", 32)
    np.testing.assert_allclose(cfg.scoring.weights, PED2)
    assert set(cfg.calibration.components) == {"w1", "w2", "w3"}
    det = Detector(bundle)
    assert det.features is None and det.available == (True, True, True) and det.frame_scorer().weights[2] > 0
    windows = torch.stack([data[0].get(np.arange(s, s + 16)) for s in (0, 16)])
    ws = det.score(windows)
    assert ws.disc_prob.shape == (2, 16) and ((ws.disc_prob >= 0) & (ws.disc_prob <= 1)).all()
    assert (ws.disc_prob[:, :8] == ws.disc_prob[:, :1]).all() and (ws.disc_prob[:, 8:] == ws.disc_prob[:, 8:9]).all()
    # w1 comes from the same encoder pass and equals the spatial AE's plain forward
    plain = Detector(Bundle(None, cfg, bundle.spatial, bundle.temporal)).score(windows)
    np.testing.assert_array_equal(ws.psnr, plain.psnr)
    assert load_detector(str(out), "cpu").available == (True, True, True)  # the service's loader: no CLIP needed


def test_eval_reuses_clip_flow_and_matches_per_window_flow(runs, tmp_path):
    """`vad eval` computes a clip's flow once and slices it; the scores equal per-window flow (window_flow)."""
    from offline.evaluate import raw_components_detector

    root, data, *_ = runs
    det = Detector.load(export(root / "spatial", tmp_path / "b", root / "temporal", data=data))
    frames = np.repeat(data[1].frames[:24], 3, axis=-1)
    fast = raw_components_detector(det, frames, stride=16, frame_mode="center", batch=4)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
    slow = det.score(torch.stack([x[:, s : s + 16] for s in (0, 8)]))  # centre frames 0..8 -> window 0, 16.. -> 8
    np.testing.assert_allclose(fast["w2"][:9], slow.flow_error[0, :9], rtol=1e-5)
    np.testing.assert_allclose(fast["w2"][16:], slow.flow_error[1, 8:], rtol=1e-5)


def test_scoring_items_parse_as_yaml_and_bare_number_lists():
    """`--scoring weights=0.2,0.8,0` means the list an operator wrote (YAML alone reads a string and the bundle's
    validation refused it); other values stay YAML; a malformed item is named."""
    from offline.training.export import parse_scoring

    got = parse_scoring(["weights=0.2,0.8,0", "hop=8", "pool=window", "weights2=[0.5, 0.5, 0]", "note=a,b"])
    assert got == {"weights": [0.2, 0.8, 0], "hop": 8, "pool": "window", "weights2": [0.5, 0.5, 0], "note": "a,b"}
    with pytest.raises(ValueError, match="'hop8'"):
        parse_scoring(["hop8"])
