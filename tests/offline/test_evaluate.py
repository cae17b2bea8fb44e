"""`vad eval` end to end on real Ped2 test clips: classical baselines and bundles, stream and paper protocols."""
import json

import numpy as np
import pytest

from offline.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_eval_frame_difference_on_real_clips(ped2, tmp_path):
    out = tmp_path / "eval"
    rc = main(["eval", "--frame-difference", "--data", str(ped2), "--clips", "01,02", "--size", "128", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    labels = json.loads((ped2 / "labels.json").read_text())
    assert report["frames"] == labels["test"]["01"]["frames"] + labels["test"]["02"]["frames"]
    for protocol in ("stream", "paper"):
        r = report["results"][protocol]
        assert 0.0 < r["micro_auc"] < 1.0 and 0.0 < r["macro_auc"] < 1.0
        assert set(r["per_clip_auc"]) == {"01", "02"}
        assert len(report["series"][protocol]["01"]) == labels["test"]["01"]["frames"]
    # the stream protocol scores what a camera has seen: the last frames no hop reached yet stay unscored
    stream = report["results"]["stream"]
    assert stream["scored_frames"] + stream["unscored_frames"] == report["frames"] and stream["unscored_frames"] < 32
    assert report["series"]["stream"]["01"][-1] is None and report["series"]["paper"]["01"][-1] is not None
    # frame difference is a weak but real signal on Ped2: better than chance on these clips
    assert stream["micro_auc"] > 0.6 and report["results"]["paper"]["micro_auc"] > 0.6
    for name in ("roc.png", "scores.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_eval_baseline_pooled_over_its_windows(ped2, tmp_path):
    """--pool window: every stream frame of a window gets one score (its window's mean evidence), named in the report."""
    out = tmp_path / "eval"
    rc = main(["eval", "--baseline", "frame-difference", "--pool", "window", "--protocol", "stream", "--data", str(ped2),
               "--clips", "01", "--size", "64", "--block", "8", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["scoring"]["pool"] == "window" and "window mean" in report["scorer"]
    s = np.array([np.nan if v is None else v for v in report["series"]["stream"]["01"]])
    windows = s[: len(s) // 16 * 16].reshape(-1, 16)
    ok = np.isfinite(windows).all(1)
    assert ok.sum() >= 10 and (np.ptp(windows[ok], axis=1) < 1e-4).all()  # one value per window


def test_eval_unknown_clip_is_a_clear_error(ped2, tmp_path, capsys):
    rc = main(["eval", "--frame-difference", "--data", str(ped2), "--clips", "99", "--out", str(tmp_path)])
    assert rc == 2
    assert "unknown test clip id(s) ['99']" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_random_bundle_runs_the_whole_chain(ped2, tmp_path):
    """Freshly initialised spatial + temporal AEs through Detector, flow, both protocols and the plots."""
    out = tmp_path / "eval"
    rc = main(["eval", "--random-bundle", "--data", str(ped2), "--clips", "01", "--size", "32", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["components_available"] == {"w1": True, "w2": True, "w3": False}
    r = report["results"]["paper"]
    assert set(r["components"]) == {"w1", "w2"}
    assert report["scoring"]["paper_weights"] == pytest.approx([0.65, 0.25, 0.1])
    assert all(0.0 <= v <= 1.0 for v in report["series"]["paper"]["01"])
    assert all(v is None or 0.0 < v < 1.0 for v in report["series"]["stream"]["01"])
    assert (out / "roc.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_eval_reports_the_selection_split_and_takes_a_flow_budget(ped2, tmp_path, capsys):
    """Ped2's labels.json names the dataset, so the report carries the micro-AUC of each half of the selection
    split (settings chosen on `select`, reported on `report`); --flow sets the flow-magnitude row's TV-L1 budget
    (budget=cpu: the cpu schedule's), recorded in the report; a bad --flow names itself."""
    from offline.eval_split import SPLITS
    from offline.training.cli import CPU_FLOW_BUDGET

    out = tmp_path / "eval"
    rc = main(["eval", "--baseline", "flow-magnitude", "--flow", "budget=cpu", "--flow", "warps=2", "--protocol", "stream",
               "--size", "64", "--block", "8", "--data", str(ped2), "--clips", "02,06", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    split = report["results"]["stream"]["split"]
    assert split["dataset"] == "ped2" and "02" in SPLITS["ped2"]["select"] and "06" in SPLITS["ped2"]["report"]
    assert 0 < split["select"] <= 100 and 0 < split["report"] <= 100
    assert report["flow"]["warps"] == 2 and report["flow"]["scales"] == CPU_FLOW_BUDGET["scales"]
    assert "selection split: select half" in capsys.readouterr().out
    assert main(["eval", "--baseline", "flow-magnitude", "--flow", "scales", "--data", str(ped2), "--out", str(out)]) == 2
    assert "--flow 'scales'" in capsys.readouterr().err
