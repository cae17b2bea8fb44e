"""A dataset's table from `vad eval` reports: Markdown rows and bench/results/<dataset>.json (AUCs in percent).

    python bench/ped2_summary.py runs/ped2-table [--json bench/results/ped2.json]
    python bench/ped2_summary.py runs/ped1-table --json bench/results/ped1.json     # any dataset, same schema
    python bench/ped2_summary.py runs/ped1-table --json bench/results/ped1.json --merge   # add rows, keep the rest

Every `ROOT/<row>/report.json` is a row; an optional `ROOT/<row>/row.json` adds what the report cannot know:
{"kind": "model" | "classical", "label", "schedule", "train_minutes", "command"}. Rows are sorted by stream-protocol
micro-AUC; the best classical row is marked, so nobody mistakes a motion detector's score for a model's.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def pct(v):
    """A fraction as a percentage with 2 decimals (None stays None)."""
    return None if v is None or v != v else round(100 * v, 2)


def collect(root: Path) -> dict:
    """{row: entry in the bench/results/ped2.json schema} for every report under root."""
    rows = {}
    for report in sorted(root.glob("*/report.json")):
        r = json.loads(report.read_text())
        meta_path = report.parent / "row.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        kind = meta.get("kind", "classical" if r["scorer"].split(" ")[0] in ("frame-difference", "flow-magnitude") else "model")
        res = r["results"]
        rows[report.parent.name] = {
            "label": meta.get("label", r["scorer"]),
            "kind": kind,
            "protocol": {p: {"micro_auc": pct(v["micro_auc"]), "macro_auc": pct(v["macro_auc"]),
                             **({"split": v["split"]} if "split" in v else {})} for p, v in res.items()},
            "components_stream_micro_auc": {c: pct(v["micro_auc"]) for c, v in res.get("stream", {}).get("components", {}).items()},
            "scoring": r.get("scoring"),
            "schedule": meta.get("schedule"),
            "train_minutes": meta.get("train_minutes"),
            "ms_per_frame": res.get("stream", {}).get("ms_per_frame"),
            "threads": res.get("stream", {}).get("threads"),
            "command": meta.get("command"),
        }
    return rows


def table(rows: dict) -> str:
    """Markdown table, best stream micro-AUC first; the best classical row is marked."""
    get = lambda e, p, k: e["protocol"].get(p, {}).get(k)  # noqa: E731
    classical = [n for n, e in rows.items() if e["kind"] == "classical" and get(e, "stream", "micro_auc") is not None]
    best = max(classical, key=lambda n: get(rows[n], "stream", "micro_auc"), default=None)
    out = ["| row | kind | stream micro | stream macro | paper micro | paper macro | ms / frame | schedule, train min |",
           "|---|---|---|---|---|---|---|---|"]
    order = sorted(rows, key=lambda n: -(get(rows[n], "stream", "micro_auc") or -1))
    for n in order:
        e = rows[n]
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        mark = " **(best classical)**" if n == best else ""
        out.append(f"| {e['label']}{mark} | {e['kind']} | {fmt(get(e, 'stream', 'micro_auc'))} | {fmt(get(e, 'stream', 'macro_auc'))} | "
                   f"{fmt(get(e, 'paper', 'micro_auc'))} | {fmt(get(e, 'paper', 'macro_auc'))} | {fmt(e['ms_per_frame'])} | "
                   f"{e['schedule'] or '-'}, {e['train_minutes'] if e['train_minutes'] is not None else '-'} |")
    return "\n".join(out)


def main(argv=None) -> int:
    """Print the table of the reports under ROOT; with --json also write the rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="folder of eval output folders (one per row)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here (bench/results/ped2.json)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows already in --json that ROOT does not re-measure (runs of earlier sessions)")
    args = ap.parse_args(argv)
    rows = collect(args.root)
    if args.merge and args.json and args.json.is_file():
        rows = json.loads(args.json.read_text()) | rows
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
