"""offline/learn.py: `vad learn` on real footage cut into recording-like segments (vtest, normal pedestrians)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from offline.cli import main as vad
from offline.data.decode import decode_video
from offline.data.encode import write_video
from offline.learn import REPORT_FILE, LearnError, learn, split_clips
from offline.scoring.alert_rules import AlertRules, count_alerts
from offline.scoring.bundle import load_bundle

FAST = {"train.epochs": 1, "pa.spatial": "none"}


@pytest.fixture(scope="module")
def footage(vtest, tmp_path_factory):
    """The first 24 s of vtest (10 fps, 640x480 -> 160x120) as 4 segments, like `vad record`'s."""
    root = tmp_path_factory.mktemp("footage")
    frames = []
    for i, f in enumerate(decode_video(vtest)):
        if i >= 240:
            break
        frames.append(f[::4, ::4])
    for i, part in enumerate(np.array_split(np.stack(frames), 4)):
        write_video(part, root / f"segment-{i:03d}.mp4", 10.0)
    return root


@pytest.fixture(scope="module")
def learned(footage, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned") / "bundle"
    seen = []
    result = learn(footage, out, schedule="tiny", eval_fraction=0.25, max_false_alerts_per_hour=600.0,
                   overrides=FAST, progress=False, on_progress=seen.append)
    result.progress = seen
    return result


def test_split_keeps_the_last_clips_unseen(footage):
    from offline.data.readers import open_dataset

    clips = list(open_dataset(footage).train)
    train, held = split_clips(clips, 0.25)
    assert [c.id for c in train] == ["segment-000", "segment-001", "segment-002"]
    assert [c.id for c in held] == ["segment-003"]
    assert split_clips(clips[:1], 0.5) == (clips[:1], [])  # one clip: nothing can be held out
    # the nearest to the fraction, never none and never all
    assert [len(split_clips(clips, f)[1]) for f in (0.05, 0.3, 0.5, 0.6, 0.9)] == [1, 1, 2, 2, 3]
    with pytest.raises(LearnError, match="eval_fraction"):
        split_clips(clips, 1.0)


def test_feedback_clips_always_train_and_are_never_the_unseen_footage(tmp_path):
    """A camera's recordings folder as the service leaves it: two recordings and the operator's false alarms under
    feedback/ (which sorts after both recordings, so a plain split by id would hold them out)."""
    from offline.data.readers import open_dataset
    from offline.learn import is_feedback

    tiny = np.zeros((20, 16, 16, 3), np.uint8)
    for rel in ("door-20240101T000000Z-ab12/seg-000001.mkv", "door-20240102T000000Z-cd34/seg-000001.mkv",
                "feedback/event-3.mkv", "feedback/event-12.mkv"):
        write_video(tiny, tmp_path / rel, 10.0)
    clips = list(open_dataset(tmp_path).train)
    feedback = {"feedback/event-3", "feedback/event-12"}
    assert {c.id for c in clips if is_feedback(c)} == feedback
    for fraction in (0.0, 0.2, 0.5, 0.9):
        train, held = split_clips(clips, fraction)
        assert feedback <= {c.id for c in train} and not feedback & {c.id for c in held}, fraction
        assert len(train) + len(held) == len(clips)
    train, held = split_clips(clips, 0.2)  # 20% of the recorded frames: the later recording, not a feedback clip
    assert [c.id for c in held] == ["door-20240102T000000Z-cd34/seg-000001"]
    assert [c.id for c in train] == ["door-20240101T000000Z-ab12/seg-000001", "feedback/event-12", "feedback/event-3"]
    only = [c for c in clips if is_feedback(c)] + clips[:1]  # one recording: nothing can be held out
    assert split_clips(only, 0.5)[1] == []


def test_learn_reports_progress_in_order(learned):
    stages = [p["stage"] for p in learned.progress]
    assert stages[0] == "reading footage" and stages[-1] == "done"
    assert {"training", "calibrating", "evaluating"} <= set(stages)
    fractions = [p["fraction"] for p in learned.progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert max(p["step"] or 0 for p in learned.progress) == learned.report["steps"] // 10 * 10


def test_learn_writes_a_calibrated_bundle_measured_on_footage_it_never_saw(learned):
    bundle = load_bundle(learned.bundle)
    report = json.loads((learned.bundle / REPORT_FILE).read_text())
    assert report == json.loads(json.dumps(learned.report))
    assert report["train_clips"] == ["segment-000", "segment-001", "segment-002"]
    assert report["unseen"]["clips"] == ["segment-003"]
    assert 5.0 < report["unseen"]["seconds"] < 7.0
    cal = bundle.config.calibration
    assert cal.frames >= 32 and cal.score_quantiles["0.5"] == pytest.approx(0.5, abs=0.05)
    # the statistics come from windows every 4 frames of the held-out tails (here 16 frames each: one window)
    assert report["calibration"]["samples"] == cal.samples >= cal.frames and cal.stride == 4
    # the chosen threshold is stored beside (not instead of) the normaliser's anchor, and is the one replayed
    choice = report["threshold_choice"]
    assert bundle.config.scoring.alert_threshold == pytest.approx(choice["threshold"])
    assert bundle.config.scoring.threshold == 0.9
    traces = [np.asarray(v, dtype=float) for v in cal.score_trace.values()]
    rules = AlertRules(**report["rules"])
    assert count_alerts(traces, report["replay_fps"], choice["threshold"], rules) * 3600 / choice["footage_s"] \
        == pytest.approx(choice["expected_per_hour"])
    unseen = report["unseen"]
    assert set(unseen["false_alerts"]) == {"bundle", "chosen"}
    q = unseen["score_quantiles"]
    assert 0 <= q["0.5"] <= q["0.9"] <= q["0.99"] <= q["1.0"] <= 1


def test_vad_learn_cli_names_a_folder_without_footage(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert vad(["learn", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "b"), "--schedule", "tiny"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err
    assert vad(["learn", "--data", str(tmp_path), "--out", str(tmp_path / "b"), "--schedule", "nope"]) == 2
    assert "schedule 'nope'" in capsys.readouterr().err


def test_vad_learn_cli_on_one_clip_says_why_there_is_no_evaluation(footage, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    (one / "segment-000.mp4").symlink_to(footage / "segment-000.mp4")
    code = vad(["learn", "--data", str(one), "--out", str(tmp_path / "b"), "--schedule", "tiny", "--no-progress",
                "--set", "train.epochs=1", "--set", "pa.spatial=none"])
    assert code == 0
    out = capsys.readouterr().out
    assert "one clip only" in out and str(tmp_path / "b") in out
    assert json.loads((tmp_path / "b" / REPORT_FILE).read_text())["unseen"] is None


@pytest.fixture(scope="module")
def learned_with_motion(footage, tmp_path_factory):
    """The cpu schedule shrunk to seconds (32 px, narrow, one epoch) with the flow AE: its recipe must still apply."""
    out = tmp_path_factory.mktemp("learned-motion") / "bundle"
    seen = []
    small = {**FAST, "data.size": 32, "data.train_stride": 8, "model.channels": [8, 16, 32], "flow.clip": 2.5}
    result = learn(footage, out, schedule="cpu", eval_fraction=0.25, temporal=True, overrides=small, progress=False,
                   on_progress=seen.append)
    result.progress = seen
    return result


def test_learn_with_motion_trains_both_autoencoders_and_scores_with_the_cpu_recipe(learned_with_motion):
    from offline.learn import CPU_RECIPE, CPU_RECIPE_WEIGHTS
    from offline.scoring.detector import Detector

    report = learned_with_motion.report
    assert report["temporal"]["steps"] > 0 and report["steps"] > 0
    stages = [p["stage"] for p in learned_with_motion.progress]
    first = {s: stages.index(s) for s in ("training", "training temporal", "calibrating", "evaluating")}
    assert first["training"] < first["training temporal"] < first["calibrating"] < first["evaluating"]
    fractions = [p["fraction"] for p in learned_with_motion.progress]
    assert fractions == sorted(fractions)
    detector = Detector.load(learned_with_motion.bundle, "cpu")
    assert detector.temporal is not None  # the bundle computes flow and scores it
    spec = detector.config.scoring
    assert {k: getattr(spec, k) for k in CPU_RECIPE} == CPU_RECIPE
    assert tuple(spec.weights) == pytest.approx(CPU_RECIPE_WEIGHTS)
    assert report["scoring"]["weights"] == pytest.approx(list(CPU_RECIPE_WEIGHTS))
    assert set(detector.config.calibration.components) >= {"w1", "w2"}  # both evidences calibrated
    assert report["unseen"]["frames_scored"] > 0  # the unseen clip was streamed through flow and both AEs


def test_vad_learn_cli_scoring_wins_over_the_recipe_and_no_temporal_learns_the_spatial_ae_alone(footage, tmp_path, capsys):
    out = tmp_path / "bundle"
    code = vad(["learn", "--data", str(footage), "--out", str(out), "--schedule", "cpu", "--no-progress", "--no-temporal",
                "--set", "train.epochs=1", "--set", "pa.spatial=none", "--set", "data.size=32",
                "--set", "data.train_stride=8", "--set", "model.channels=[8,16,32]", "--scoring", "reduction_spatial=frame"])
    assert code == 0, capsys.readouterr().err
    bundle = load_bundle(out)
    spec = bundle.config.scoring
    assert (spec.reduction_spatial, spec.block, spec.pool) == ("frame", 16, "window")  # the flag won, the rest stayed
    assert bundle.temporal is None and json.loads((out / REPORT_FILE).read_text())["temporal"] is None
    assert "spatial AE, cpu schedule" in capsys.readouterr().out


def test_learn_reuse_skips_finished_training_runs_with_the_same_config(learned_with_motion, footage, tmp_path):
    """`vad learn --reuse`: calibrate and measure again without training again, only for runs that finished with
    exactly this config (a stopped run, or another config, trains)."""
    import shutil

    from offline.config import load_config
    from offline.learn import finished_run

    out = learned_with_motion.bundle
    work = out.with_name(out.name + ".run")
    logs = {t: (work / t / "train.jsonl").read_text() for t in ("spatial", "temporal")}
    small = {**FAST, "data.size": 32, "data.train_stride": 8, "model.channels": [8, 16, 32], "flow.clip": 2.5}
    again = learn(footage, out, schedule="cpu", eval_fraction=0.25, temporal=True, overrides=small, progress=False, reuse=True)
    assert {t: (work / t / "train.jsonl").read_text() for t in logs} == logs  # nothing trained
    report = learned_with_motion.report
    assert (again.report["steps"], again.report["temporal"]) == (report["steps"], report["temporal"])
    assert again.report["reused"] == ["spatial", "temporal"] and report["reused"] == []
    assert again.report["calibration"] == report["calibration"] and again.report["unseen"] == report["unseen"]
    # what finished_run refuses: another config, a stopped run
    run = tmp_path / "spatial"
    shutil.copytree(work / "spatial", run)
    cfg = load_config(run / "config.yaml")  # the run as trained (its out_dir is the work dir)
    assert finished_run(run, cfg) is not None
    assert finished_run(run, cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})) is None
    lines = (run / "train.jsonl").read_text().splitlines()
    end = json.loads(lines[-1]) | {"reason": "stopped by SIGTERM"}
    (run / "train.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(end)]) + "\n")
    assert finished_run(run, cfg) is None
