"""Bundles: save/load round trip gives identical scores; tampering, unknown versions and pickles are refused."""
import json
import shutil

import numpy as np
import pytest
import torch

from offline.models.autoencoder import Autoencoder
from offline.models.discriminator import Discriminator, build_discriminator
from offline.scoring.bundle import BundleError, Calibration, InputSpec, load_bundle, random_bundle, save_bundle
from offline.scoring.detector import Detector

SMALL = (8, 8, 16)


@pytest.fixture()
def bundle_dir(tmp_path):
    torch.manual_seed(0)
    ae = Autoencoder(channels=SMALL)
    with torch.no_grad():  # non-trivial BN statistics, so eval mode differs from train mode
        ae.train()
        ae(torch.rand(2, 3, 16, 32, 32) * 2 - 1)
    return save_bundle(
        tmp_path / "b", ae, input_spec=InputSpec(size=32),
        calibration=Calibration(components={"w1": (-20.0, 1.5)}, score_quantiles={"0.99": 0.9}, frames=64),
    )


def test_round_trip_identical_scores(bundle_dir):
    x = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    d1 = Detector.load(bundle_dir)
    s1 = d1.score(x, return_maps=True)
    copy = bundle_dir.parent / "copy"
    shutil.copytree(bundle_dir, copy)
    s2 = Detector.load(copy).score(x, return_maps=True)
    assert np.array_equal(s1.psnr, s2.psnr) and np.array_equal(s1.error_map, s2.error_map)
    assert s1.psnr.shape == (2, 16) and s1.error_map.shape == (2, 16, 32, 32)
    assert s1.flow_error is None and s1.disc_prob is None
    assert d1.config.calibration.components["w1"] == (-20.0, 1.5)
    fs = d1.frame_scorer()
    assert fs.kind == "running" and fs.weights == pytest.approx((1.0, 0.0, 0.0))


def _edit_config(path, fn):
    cfg = json.loads((path / "config.json").read_text())
    fn(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(version=99), "unsupported bundle version 99"),
        (lambda c: c["spatial"].update(channels=[8, 8, 32]), "do not match the spatial architecture"),
        (lambda c: c.update(surprise=1), "surprise: unknown key"),
        (lambda c: c["scoring"].update(weights=[0.5, 0.2, 0.1]), "scoring.weights: weights must sum to 1"),
        (lambda c: c.update(weights_sha256="0" * 64), "checksum mismatch"),
    ],
)
def test_tampered_config_refused(bundle_dir, edit, message):
    _edit_config(bundle_dir, edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir)


def test_modified_weights_and_pickles_refused(bundle_dir):
    weights = bundle_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(bundle_dir)
    weights.unlink()
    torch.save({"x": torch.zeros(1)}, bundle_dir / "model.pt")
    with pytest.raises(BundleError, match="pickled checkpoints are refused"):
        load_bundle(bundle_dir)
    # a pickle saved under the safetensors name, with a matching checksum: still refused, never unpickled
    import hashlib
    pickle_bytes = (bundle_dir / "model.pt").read_bytes()
    weights.write_bytes(pickle_bytes)
    _edit_config(bundle_dir, lambda c: c.update(weights_sha256=hashlib.sha256(pickle_bytes).hexdigest()))
    with pytest.raises(BundleError, match="not a safetensors file"):
        load_bundle(bundle_dir)
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(bundle_dir / "nowhere")


def test_detector_rejects_wrong_window(bundle_dir):
    d = Detector.load(bundle_dir)
    with pytest.raises(ValueError, match="T=16 frames at 32x32"):
        d.score(torch.zeros(1, 3, 16, 64, 64))


def test_random_bundle_is_seeded(tmp_path):
    a = load_bundle(random_bundle(tmp_path / "a", size=32, temporal=False, channels=SMALL, seed=3))
    b = load_bundle(random_bundle(tmp_path / "b", size=32, temporal=False, channels=SMALL, seed=3))
    assert all(torch.equal(a.spatial.state_dict()[k], v) for k, v in b.spatial.state_dict().items())
    assert a.config.notes["untrained"] is True


def test_chunked_scoring_matches_one_pass(tmp_path):
    """CPU chunks (Detector.CPU_CHUNK) are a speed choice only: every field matches one whole-batch pass."""
    path = random_bundle(tmp_path / "t", size=32, temporal=True, channels=SMALL, seed=1)
    x = torch.rand(7, 3, 16, 32, 32) * 2 - 1
    flow = torch.rand(7, 3, 16, 32, 32) * 2 - 1  # given, so each chunk must take its own slice of it
    whole = Detector.load(path, chunk=7).score(x, flow, return_maps=True)
    default = Detector.load(path)
    assert default.chunk == Detector.CPU_CHUNK
    for d in (default, Detector.load(path, chunk=1)):
        parts = d.score(x, flow, return_maps=True)
        for field in ("psnr", "flow_error", "error_map"):
            a, b = getattr(whole, field), getattr(parts, field)
            assert a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5), field
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        Detector.load(path, chunk=0)


def test_cpu_bfloat16_scores_what_float32_scores(tmp_path):
    """`scoring.cpu_precision: bfloat16` is a speed setting on the CPU: autocast, chunks of CPU_CHUNK_BF16 windows, and
    the same evidence as float32 within bf16's rounding (a bundle written before the key scores in float32)."""
    from offline.scoring.bundle import update_scoring

    path = random_bundle(tmp_path / "t", size=32, temporal=True, channels=SMALL, seed=1)
    config = json.loads((path / "config.json").read_text())
    config["scoring"].pop("cpu_precision")
    (path / "config.json").write_text(json.dumps(config))
    x = torch.rand(5, 3, 16, 32, 32) * 2 - 1
    flow = torch.rand(5, 3, 16, 32, 32) * 2 - 1
    fp32 = Detector.load(path)
    assert fp32.config.scoring.cpu_precision == "float32" and not fp32.bf16 and fp32.chunk == Detector.CPU_CHUNK
    ref = fp32.score(x, flow, return_maps=True)
    update_scoring(path, cpu_precision="bfloat16")
    bf16 = Detector.load(path)
    assert bf16.bf16 and bf16.chunk == Detector.CPU_CHUNK_BF16
    got = bf16.score(x, flow, return_maps=True)
    assert np.abs(got.psnr - ref.psnr).max() < 0.01  # dB, of ~11 (measured 2e-4)
    assert np.allclose(got.flow_error, ref.flow_error, rtol=1e-3)
    assert np.abs(got.error_map - ref.error_map).max() < 5e-3  # of ~0.34 (measured 6e-4)
    assert not np.array_equal(got.psnr, ref.psnr)  # it did run in bfloat16
    with pytest.raises(BundleError, match="cpu_precision"):
        update_scoring(path, cpu_precision="float16")


def test_a_bundle_from_before_discriminator_features_loads_as_clip_512(tmp_path):
    """Bundles written before `discriminator_features` / `discriminator_in_features` existed load as they did."""
    torch.manual_seed(0)
    disc = Discriminator()
    path = save_bundle(tmp_path / "old", Autoencoder(channels=SMALL), discriminator=disc, input_spec=InputSpec(size=32),
                       clip_model_path="/models/vificlip")
    _edit_config(path, lambda c: [c.pop(k) for k in ("discriminator_features", "discriminator_in_features")])
    assert "discriminator_features" not in json.loads((path / "config.json").read_text())
    loaded = load_bundle(path)
    assert loaded.config.discriminator_features == "clip" and loaded.config.discriminator_in_features == 512
    assert loaded.config.clip_model_path == "/models/vificlip"
    assert all(torch.equal(v, loaded.discriminator.state_dict()[k]) for k, v in disc.state_dict().items())


def test_spatial_encoder_discriminator_width_must_fit_the_spatial_latent(tmp_path):
    path = save_bundle(tmp_path / "b", Autoencoder(channels=SMALL), discriminator=build_discriminator("spatial_encoder", 2 * SMALL[2]),
                       input_spec=InputSpec(size=32), discriminator_features="spatial_encoder")
    assert load_bundle(path).config.discriminator_in_features == 32
    _edit_config(path, lambda c: c.update(discriminator_in_features=512))
    with pytest.raises(BundleError, match=r"discriminator_in_features \(512\) must be 32"):
        load_bundle(path)
