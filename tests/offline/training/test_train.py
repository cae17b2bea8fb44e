"""The training loop on tiny synthetic clips: loss goes down, PA probabilities hold, resume is exact, stops are clean."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from offline.flow import encode_flow
from offline.pa.baselines import generated_intruders
from offline.pa.inpaint import TeleaInpainter
from offline.pa.sampler import SpatialPA, TemporalPA, item_rng
from offline.training.data import TrainWindows, holdout_split
from offline.training.run_dir import StopRequest, load_checkpoint
from offline.training.ae_loop import build_autoencoder, train_autoencoder
from tests.offline.training.synthetic import synthetic_data, tiny_config

REPO = Path(__file__).resolve().parents[3]


def test_training_lowers_the_loss_on_a_fixed_batch(tmp_path):
    # one clip whose windows form exactly one batch: every step sees the same fixed batch
    data = synthetic_data(clips=1, n_frames=28)
    cfg = tiny_config(tmp_path, train__batch_size=4, train__epochs=10, train__lr=2e-3, train__holdout_fraction=0)
    windows = TrainWindows(data, 16, 4, target="spatial")
    assert len(windows) == 4
    x = torch.stack([windows[i][0] for i in range(len(windows))])
    torch.manual_seed(cfg.train.seed)
    before = F.mse_loss(build_autoencoder(cfg)(x), x).item()
    result = train_autoencoder(cfg, progress=False, data=data)
    after = F.mse_loss(result.model.train()(x), x).item()
    assert result.step == 10
    assert after < 0.7 * before, (before, after)
    log = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    steps = [r for r in log if r["event"] == "step"]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert all(r["windows_per_s"] > 0 for r in steps)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert [r["event"] for r in log][0] == "start" and log[-1]["event"] == "end"


@pytest.mark.parametrize("kind,p", [("gaussian", 0.4), ("skip_frame", 0.2), ("learned_noise", 0.5), ("none", 0.0)])
def test_spatial_pa_probability_is_respected(kind, p):
    data = synthetic_data(clips=1, n_frames=80)[0]
    sampler = SpatialPA(kind, p, 16)
    n = 1500
    hits = sum(sampler(data.get, 80, 0, item_rng(0, e, i)).is_pa for e in range(3) for i in range(n // 3))
    sigma = np.sqrt(n * p * (1 - p))
    assert abs(hits - n * p) <= 4 * sigma + 1e-9, (kind, hits, n * p)


def test_temporal_pa_probability_is_respected():
    flow = torch.randn(2, 16, 32, 32)
    sampler = TemporalPA("flow_mixup", 0.5)
    hits = [sampler(flow, item_rng(1, 0, i))[1] for i in range(1000)]
    assert abs(sum(hits) - 500) <= 4 * np.sqrt(250)


def test_pa_probability_over_training_epochs(tmp_path):
    data = synthetic_data(clips=2, n_frames=40)
    sampler = SpatialPA("ldm", 0.4, 16, inpainter=TeleaInpainter())
    windows = TrainWindows(data, 16, 2, target="spatial", spatial=sampler, seed=3)
    flags = []
    for epoch in range(6):
        windows.set_epoch(epoch)
        flags += [windows[i][2] for i in range(len(windows))]
    n = len(flags)
    assert abs(sum(flags) - 0.4 * n) <= 4 * np.sqrt(n * 0.24), (sum(flags), n)
    windows.set_epoch(0)
    assert [windows[i][2] for i in range(len(windows))] == flags[: len(windows)]  # a pure function of (seed, epoch, i)


@pytest.mark.parametrize("kind", ["ldm", "patch", "skip_frame", "gaussian"])
def test_pa_changes_the_input_and_the_target_stays_normal(kind):
    data = synthetic_data(clips=1, n_frames=80)[0]
    sampler = SpatialPA(kind, 1.0, 16, inpainter=TeleaInpainter(), intruders=generated_intruders(4, 32, np.random.default_rng(0)))
    for i in range(5):
        s = sampler(data.get, 80, 8, item_rng(0, 0, i))
        assert s.is_pa and s.input.shape == s.target.shape == (3, 16, 32, 32)
        assert float(s.input.min()) >= -1 and float(s.input.max()) <= 1
        assert not torch.equal(s.input, s.target)
        if kind != "skip_frame":  # skip-frame's target is the normal window at the PA's own start
            assert torch.equal(s.target, data.get(np.arange(8, 24)))


def test_holdout_tail_is_never_trained_on():
    data = synthetic_data(clips=2, n_frames=60)
    cut = holdout_split(60, 0.25, 16)
    assert cut == 44
    train = TrainWindows(data, 16, 1, target="spatial", holdout_fraction=0.25)
    held = TrainWindows(data, 16, 1, target="spatial", part="holdout", holdout_fraction=0.25)
    assert max(s + 16 for _, s in train.keys()) <= cut
    assert held.keys() == [("syn0", 44), ("syn1", 44)]


def test_resume_continues_from_the_same_step_and_optimiser_state(tmp_path):
    data = synthetic_data(clips=2, n_frames=40)
    overrides = dict(train__epochs=3, train__max_steps=5, train__batch_size=2)
    full = train_autoencoder(tiny_config(tmp_path / "full", **overrides), progress=False, data=data)

    stop = StopRequest()
    cfg = tiny_config(tmp_path / "split", **overrides)
    first = train_autoencoder(cfg, progress=False, data=data, stop=stop,
                              after_step=lambda s: stop.request("test") if s == 2 else None)
    assert first.stopped and first.step == 2
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert ckpt["step"] == 2 and ckpt["epoch"] == 0 and ckpt["batch_in_epoch"] == 2
    assert all(int(s["step"]) == 2 for s in ckpt["optimizer"]["state"].values())

    second = train_autoencoder(cfg, resume=True, progress=False, data=data)
    assert second.step == 5 and not second.stopped
    assert second.losses == full.losses[2:]
    for (k, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k
    ck_full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["optimizer"]["state"]
    ck_split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["optimizer"]["state"]
    for key in ck_full:
        assert torch.equal(ck_full[key]["exp_avg_sq"], ck_split[key]["exp_avg_sq"])
    events = [json.loads(x)["event"] for x in (tmp_path / "split" / "train.jsonl").read_text().splitlines()]
    assert "resume" in events


def test_resume_refuses_a_changed_config(tmp_path):
    data = synthetic_data(clips=1, n_frames=40)
    train_autoencoder(tiny_config(tmp_path, train__max_steps=1), progress=False, data=data)
    with pytest.raises(ValueError, match="train.lr"):
        train_autoencoder(tiny_config(tmp_path, train__max_steps=2, train__lr=0.5), resume=True, progress=False, data=data)


def test_sspcab_and_learned_noise_train(tmp_path):
    data = synthetic_data(clips=1, n_frames=40)
    cfg = tiny_config(tmp_path, model__sspcab=True, pa__spatial="learned_noise", pa__p_spatial=1.0, train__max_steps=2)
    result = train_autoencoder(cfg, progress=False, data=data)
    assert result.generator is not None and all(np.isfinite(result.losses))
    weights = load_file(str(tmp_path / "weights.safetensors"))
    assert any(k.startswith("generator.") for k in weights) and any("sspcab" in k for k in weights)


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resumes(tmp_path, ped2):
    """A real `vad train` process on Ped2 gets SIGINT mid-run: exit 130, a loadable checkpoint, then --resume."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "offline.cli", "train", "--data", str(ped2), "--out", str(out), "--no-progress",
           "--set", "data.size=32", "--set", "data.clips=['01']", "--set", "model.channels=[8,8,16]",
           "--set", "train.batch_size=2", "--set", "train.log_every=1", "--set", "pa.spatial=none", "--set", "train.epochs=50"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "train.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.is_file() and sum('"step"' in x for x in log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] >= 3 and not (out / "checkpoint.pt.tmp").exists()
    resumed = subprocess.run(cmd[:-2] + ["--set", f"train.epochs=50", "--set", f"train.max_steps={ckpt['step'] + 2}", "--resume"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == ckpt["step"] + 2


def test_temporal_ae_trains_on_real_tvl1_flow_with_mixup(tmp_path):
    data = synthetic_data(clips=1, n_frames=40)
    cfg = tiny_config(tmp_path, train__target="temporal", pa__temporal="flow_mixup", pa__p_temporal=1.0,
                      train__max_steps=2, flow__clip=3.0)
    result = train_autoencoder(cfg, progress=False, data=data)
    assert result.step == 2 and all(np.isfinite(result.losses))
    flow = data[0].flow
    assert flow.shape == (39, 2, 32, 32)
    # the squares move right at 1 and 2 px/frame: TV-L1 sees that motion inside them
    assert 0.5 < float(np.median(flow[:, 0, 6:8, :][np.abs(flow[:, 0, 6:8, :]) > 0.3])) < 1.5
    windows = TrainWindows(data, 16, 4, target="temporal", temporal=TemporalPA("flow_mixup", 1.0),
                           encode=lambda f: encode_flow(f, 3.0))
    x, y, is_pa, _ = windows[0]
    assert is_pa and x.shape == y.shape == (3, 16, 32, 32) and float(y.abs().max()) <= 1
    assert torch.equal(y[:, -1], y[:, -2])  # the last index repeats the previous flow


@pytest.mark.parametrize("override,expected", [("train.batch_size=0", "train.batch_size"), ("train.epoch=3", "unknown key"),
                                               ("epochs=3", "section.key=value"),
                                               ("model.disc_features=spatial_encoder", "model.disc_spatial_run: required")])
def test_vad_train_names_the_bad_field(override, expected, capsys):
    from offline.cli import main

    assert main(["train", "--set", override]) == 2
    assert expected in capsys.readouterr().err


def test_vad_train_discriminator_names_a_spatial_run_that_is_not_one(tmp_path, capsys):
    from offline.cli import main

    args = ["train", "--target", "discriminator", "--out", str(tmp_path / "d"), "--set", "model.disc_features=spatial_encoder",
            "--set", f"model.disc_spatial_run={tmp_path / 'nowhere'}"]
    assert main(args) == 2
    assert f"{tmp_path / 'nowhere'}/config.yaml: missing" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_training_uses_bf16_autocast_and_channels_last(tmp_path):
    data = synthetic_data(clips=1, n_frames=40)
    cfg = tiny_config(tmp_path, train__device="cuda", train__max_steps=3, pa__spatial="learned_noise", pa__p_spatial=0.5)
    result = train_autoencoder(cfg, progress=False, data=data)
    assert all(np.isfinite(result.losses)) and result.step == 3
    w = result.model.encoder[0].weight
    assert w.dtype == torch.float32 and w.is_contiguous(memory_format=torch.channels_last_3d)
    assert json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])["amp"] is True


def test_time_budget_ends_training_with_usable_weights(tmp_path):
    """train.max_minutes: a schedule bounded in time (an hour on this CPU) ends like max_steps, weights written."""
    data = synthetic_data(clips=2, n_frames=40)
    cfg = tiny_config(tmp_path, train__epochs=50, train__batch_size=2, train__max_minutes=1e-6)
    result = train_autoencoder(cfg, progress=False, data=data)
    assert result.step == 1 and not result.stopped  # the budget is checked after every step
    end = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[-1])
    assert end["event"] == "end" and end["reason"].startswith("time budget reached (train.max_minutes=")
    assert (tmp_path / "weights.safetensors").is_file()


def test_the_cpu_schedules_temporal_ae_stops_at_its_measured_epochs_unless_told_otherwise(ped2, tmp_path):
    from offline.training.cli import SCHEDULES, schedule_overrides

    assert schedule_overrides("cpu", "spatial")["train.epochs"] == SCHEDULES["cpu"]["train.epochs"] == 12
    assert schedule_overrides("cpu", "temporal")["train.epochs"] == 9
    assert schedule_overrides("tiny", "temporal") == SCHEDULES["tiny"] and schedule_overrides(None, "spatial") == {}
    # `vad train` applies it whether the target comes from --target or from the --config file
    import argparse

    from offline.training.cli import add_arguments, train_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (tmp_path / "c.yaml").write_text("train:\n  target: temporal\n")
    for args in (["--target", "temporal"], ["--config", str(tmp_path / "c.yaml")], ["--target", "spatial"]):
        cfg = train_config(parser.parse_args(["--schedule", "cpu", "--data", str(ped2), *args]))
        assert (cfg.train.epochs, cfg.data.size) == ((12 if "spatial" in args else 9), 128), args
    cfg = train_config(parser.parse_args(["--schedule", "cpu", "--target", "temporal", "--set", "train.epochs=4"]))
    assert cfg.train.epochs == 4


def test_the_cpu_schedule_trains_on_its_chosen_flow_budget_and_the_paper_schedule_on_opencvs(ped2):
    """The cpu schedule's flow is CPU_FLOW_BUDGET (a bundle carries the flow config it was trained on, so the camera
    computes the same); --set flow.* wins; the paper schedule keeps OpenCV's defaults."""
    import argparse

    from offline.config import FlowConfig
    from offline.training.cli import CPU_FLOW_BUDGET, add_arguments, train_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = train_config(parser.parse_args(["--schedule", "cpu", "--target", "temporal", "--data", str(ped2)]))
    assert {k: getattr(cfg.flow, k) for k in CPU_FLOW_BUDGET} == CPU_FLOW_BUDGET
    assert cfg.flow.model_dump() != FlowConfig(clip=cfg.flow.clip).model_dump()
    cfg = train_config(parser.parse_args(["--schedule", "cpu", "--target", "temporal", "--data", str(ped2),
                                          "--set", "flow.scales=5", "--set", "flow.warm_start=false"]))
    assert cfg.flow.scales == 5 and not cfg.flow.warm_start
    paper = train_config(parser.parse_args(["--schedule", "paper", "--target", "temporal", "--data", str(ped2)]))
    assert paper.flow.model_dump() == FlowConfig(clip=paper.flow.clip).model_dump()
