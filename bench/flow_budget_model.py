"""The model half of the TV-L1 budget sweep: a flow AE trained, exported and calibrated on each point's flow, then
scored as a camera computes it (`vad eval --protocol stream`), with the project's own commands.

    .venv/bin/python bench/flow_budget_model.py --dataset ped2 --points full,s3-w1-i10-warm1 --schedule short
    .venv/bin/python bench/flow_budget_model.py --dataset ped2 --points s3-w1-i10-warm1 --schedule cpu

Per dataset one placeholder spatial AE is trained (1 epoch: it is exported beside every flow AE because a bundle
needs one, and it carries weight 0); per point `vad train --target temporal --schedule cpu` with the point's
`flow.*` settings (flow mix-up PAs, flow.clip 5 as the cpu schedule), `vad export` with the cpu recipe's scoring
(offline.learn.CPU_RECIPE) and weights (0, 1, 0), so the score is the flow AE's calibrated error alone, and
`vad eval --protocol stream`. Schedules: `short` (3 epochs, train stride 8: the sweep's, checked against `cpu`
on two points) and `cpu` (the cpu schedule's temporal AE: 9 epochs, stride 4, 50-minute budget). Each row:
stream micro / macro on the whole test set and on the selection split's halves (offline.eval_split), training
minutes, ms per analysed frame. Rows are merged into --json under "budget_model". Points at a size other than
128 px are refused (the placeholder spatial AE is 128 px).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.flow_budget import POINTS  # noqa: E402

VAD = [sys.executable, "-m", "offline.cli"]
SCHEDULES = {"short": ["--set", "train.epochs=3", "--set", "data.train_stride=8"], "cpu": []}


def run(cmd: list[str], log: Path) -> None:
    """Run one vad command, its output to `log`; a failure names the command and the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if rc:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}; see {log}")


def flow_sets(overrides: dict) -> list[str]:
    """--set flow.KEY=VALUE for a point's overrides (booleans as YAML)."""
    out = []
    for k, v in overrides.items():
        out += ["--set", f"flow.{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return out


def model_row(dataset: str, data: Path, point: str, schedule: str, out: Path) -> dict:
    """Train (unless finished), export and evaluate one point's flow AE; returns its row."""
    from offline.eval_split import split_aucs
    from offline.learn import CPU_RECIPE

    size, overrides = POINTS[point]
    if size != 128:
        raise SystemExit(f"--points: {point} is {size} px; the model sweep runs at 128 px")
    base = out / dataset
    spatial = base / "spatial-placeholder"
    if not (spatial / "weights.safetensors").is_file():
        run(VAD + ["train", "--target", "spatial", "--schedule", "cpu", "--data", str(data), "--out", str(spatial),
                   "--no-progress", "--set", "pa.spatial=none", "--set", "train.epochs=1", "--set", "data.train_stride=16"],
            base / "logs" / "spatial-placeholder.log")
    name = f"{point}-{schedule}"
    temporal = base / name / "temporal"
    t0 = time.perf_counter()
    if not (temporal / "weights.safetensors").is_file():
        run(VAD + ["train", "--target", "temporal", "--schedule", "cpu", "--data", str(data), "--out", str(temporal),
                   "--no-progress", "--set", "pa.temporal=flow_mixup", "--set", "flow.clip=5.0", *flow_sets(overrides),
                   *SCHEDULES[schedule]], base / "logs" / f"{name}.train.log")
    train_min = (time.perf_counter() - t0) / 60
    bundle = base / name / "bundle"
    scoring = [a for k, v in CPU_RECIPE.items() for a in ("--scoring", f"{k}={v}")] + ["--scoring", "weights=[0.0,1.0,0.0]"]
    run(VAD + ["export", "--spatial", str(spatial), "--temporal", str(temporal), "--out", str(bundle), *scoring],
        base / "logs" / f"{name}.export.log")
    ev = base / name / "eval"
    run(VAD + ["eval", "--bundle", str(bundle), "--data", str(data), "--protocol", "stream", "--out", str(ev)],
        base / "logs" / f"{name}.eval.log")
    report = json.loads((ev / "report.json").read_text())
    labels = {}
    from offline.data.readers import open_dataset

    for c in open_dataset(data).test:
        if c.labels is not None:
            labels[c.id] = list(c.labels)
    report["_labels"] = labels
    r = report["results"]["stream"]
    return {"name": point, "schedule": schedule, "micro": round(100 * r["micro_auc"], 2),
            "macro": round(100 * r["macro_auc"], 2), **split_aucs(dataset, report),
            "ms_per_frame": r["ms_per_frame"], "train_min": round(train_min, 1), "bundle": str(bundle)}


def save(path: Path, dataset: str, rows: list[dict]) -> None:
    """Merge rows into path's "budget" entries as <dataset>_stream_micro.model[<schedule>] (other keys kept)."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    budget = {r["name"]: r for r in doc.get("budget", [])}
    for row in rows:
        entry = budget.setdefault(row["name"], {"name": row["name"], "size": POINTS[row["name"]][0],
                                                "settings": POINTS[row["name"]][1]})
        key = f"{dataset}_stream_micro"
        entry.setdefault(key, {}).setdefault("model", {})[row["schedule"]] = {k: v for k, v in row.items() if k != "name"}
    doc["budget"] = list(budget.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, choices=["ped2", "ped1"])
    ap.add_argument("--data", type=Path, default=None, help="dataset root (default: the shared data folder's)")
    ap.add_argument("--points", required=True, help=f"comma-separated points of bench/flow_budget.py ({', '.join(POINTS)})")
    ap.add_argument("--schedule", choices=sorted(SCHEDULES), default="short")
    ap.add_argument("--out", type=Path, default=Path("runs/flow-budget-model"))
    ap.add_argument("--json", type=Path, default=None, help="merge the rows into this JSON (bench/results/flow.json)")
    args = ap.parse_args()
    data = args.data or Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")) / args.dataset
    if not data.is_dir():
        print(f"error: --data: {data} is not a directory", file=sys.stderr)
        return 2
    points = [p for p in args.points.split(",") if p]
    unknown = sorted(set(points) - set(POINTS))
    if unknown:
        print(f"error: --points: unknown {unknown}; have {list(POINTS)}", file=sys.stderr)
        return 2
    print(f"# flow-AE budget sweep, {datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
          f"{os.cpu_count()} CPUs; {args.dataset}, schedule {args.schedule}")
    rows = []
    for p in points:
        row = model_row(args.dataset, data, p, args.schedule, args.out)
        rows.append(row)
        print(f"| {p} | {args.schedule} | {row['micro']:.2f} / {row['macro']:.2f} | {row['select']:.2f} / "
              f"{row['report']:.2f} | {row['train_min']:.1f} | {row['ms_per_frame']:.1f} |", flush=True)
        if args.json:
            save(args.json, args.dataset, [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
