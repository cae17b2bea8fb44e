"""The TV-L1 budget table and bench/results/flow.json from the sweep's rows (bench/flow_budget.py, and
bench/flow_budget_model.py's model rows), with the budget chosen by rule, not by eye.

    .venv/bin/python bench/flow_summary.py runs/flow_budget.json [more.json ...] --json bench/results/flow.json

The rule: among the points at the reference's size, the cheapest (OpenCV ms per pair on one core) whose classical
flow-magnitude stream micro-AUC on the *selection* half of every dataset is within `--tolerance` (0.5) points of
the reference ("full": OpenCV's defaults) on that half. The report half is printed beside it, never used to choose.
Other keys of the --json file (the "cpu" and "gpu" parts) are kept.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATASETS = ("ped2", "ped1")


def merge(paths: list[Path]) -> list[dict]:
    """Rows of every file's "budget" list merged by point name (later files add to earlier ones)."""
    rows: dict[str, dict] = {}
    for p in paths:
        for r in json.loads(p.read_text()).get("budget", []):
            old = rows.setdefault(r["name"], {})
            for k, v in r.items():
                old[k] = {**old.get(k, {}), **v} if isinstance(v, dict) and k.endswith("_stream_micro") else v
    for r in rows.values():
        if "ms_per_pair_opencv" in r:
            r["ms_per_pair_cpu_1core"] = r["ms_per_pair_opencv"]  # the CPU backend flow.backend auto picks
    return list(rows.values())


def choose(rows: list[dict], reference: str = "full", tolerance: float = 0.5, datasets=DATASETS,
           require_model: tuple[str, ...] = ()) -> dict | None:
    """The chosen point (see the module's rule), or None when the reference or every candidate lacks figures.
    `require_model`: datasets on which a candidate must also have a flow-AE row (a budget the model was checked on)."""
    by = {r["name"]: r for r in rows}
    ref = by.get(reference)
    if ref is None or any(f"{d}_stream_micro" not in ref for d in datasets):
        return None
    ok = []
    for r in rows:
        if r["size"] != ref["size"] or "ms_per_pair_cpu_1core" not in r:
            continue
        if any(not r.get(f"{d}_stream_micro", {}).get("model") for d in require_model):
            continue
        try:
            if all(r[f"{d}_stream_micro"]["classical"]["select"] >= ref[f"{d}_stream_micro"]["classical"]["select"] - tolerance
                   for d in datasets):
                ok.append(r)
        except KeyError:
            continue
    return min(ok, key=lambda r: r["ms_per_pair_cpu_1core"], default=None)


def table(rows: list[dict], datasets=DATASETS) -> str:
    """Markdown: one row per point, cheapest first."""
    head = " | ".join(f"{d} classical whole (select / report)" for d in datasets)
    mhead = " | ".join(f"{d} flow AE (short) whole (select / report)" for d in datasets)
    out = [f"| point | size | settings | ms / pair, 1 core: OpenCV / ours | inner iterations / pair | {head} | {mhead} |",
           "|" + "---|" * (5 + 2 * len(datasets))]

    def cell(r, d, kind):
        e = r.get(f"{d}_stream_micro", {}).get(kind)
        if kind == "model":
            e = (e or {}).get("short")
        if not e:
            return "-"
        return f"{e['micro']:.2f} ({e['select']:.2f} / {e['report']:.2f})"

    for r in sorted(rows, key=lambda r: r.get("ms_per_pair_cpu_1core", 1e9)):
        settings = ", ".join(f"{k} {v}" for k, v in r["settings"].items()) or "OpenCV defaults"
        ms = f"{r['ms_per_pair_opencv']:.1f} / {r['ms_per_pair_torch']:.1f}" if "ms_per_pair_opencv" in r else "-"
        it = f"{r['inner_iterations_per_pair']:.0f}" if "inner_iterations_per_pair" in r else "-"
        cls = " | ".join(cell(r, d, "classical") for d in datasets)
        mod = " | ".join(cell(r, d, "model") for d in datasets)
        out.append(f"| {r['name']} | {r['size']} | {settings} | {ms} | {it} | {cls} | {mod} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--require-model", default="", help="comma-separated datasets on which the chosen point must also "
                    "have a flow-AE row (bench/flow_budget_model.py)")
    args = ap.parse_args()
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        print(f"error: no such file(s): {missing}", file=sys.stderr)
        return 2
    rows = [r for r in merge(args.inputs) if any(k.endswith("_stream_micro") for k in r)]  # timing-only rows: no AUC
    print(table(rows))
    need = tuple(d for d in args.require_model.split(",") if d)
    chosen = choose(rows, tolerance=args.tolerance, require_model=need)
    unchecked = choose(rows, tolerance=args.tolerance)
    if need and unchecked and chosen and unchecked["name"] != chosen["name"]:
        print(f"\n(the classical rule alone would choose {unchecked['name']}: no flow-AE row on {', '.join(need)})")
    print(f"\nchosen: {chosen['name'] if chosen else None}")
    if args.json:
        doc = json.loads(args.json.read_text()) if args.json.is_file() else {}
        doc["budget"] = rows
        doc["chosen"] = None if chosen is None else {"name": chosen["name"], "size": chosen["size"],
                                                     "settings": chosen["settings"], "require_model": list(need), "rule": __doc__.split("The rule: ")[1].split("\n\n")[0].replace("\n", " ")}
        doc.setdefault("cpu", {"cameras_per_core_5fps": None, "ped2_stream_micro": None})
        doc.setdefault("gpu", {"device": None, "pairs_per_s_128_chosen": None, "pairs_per_s_256_opencv": None,
                               "cameras_25fps": None, "p99_latency_s": None})
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
