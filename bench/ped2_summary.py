"""Print the Ped2 table rows (markdown) from `vad eval` reports: python bench/ped2_summary.py runs/ped2 [eval-subdir]."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [
    ("ae", "AE, no PAs (spatial AE alone)"),
    ("spatial-pa", "+ spatial PAs (ours: object masks, Telea fallback inpainter)"),
    ("full", "+ temporal AE with flow mix-up PAs, aggregate (0.65, 0.25) / 0.9, D off"),
    ("ae-temporal", "AE without PAs + temporal AE with flow mix-up, aggregate, D off"),
    ("ae-temporal-nopa", "AE + temporal AE, both without PAs, aggregate"),
    ("skip-frame", "LNTRA skip-frame (p 0.2, strides 2-5)"),
    ("patch", "LNTRA patch (p 0.2, procedural intruders)"),
    ("learned-noise", "learned-noise PAs (p 0.5, lambda 0.1)"),
    ("gaussian", "Gaussian-noise PAs (sigma 0.5, p 0.5)"),
]


def pct(v) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.2f}"


def main(root: str, sub: str = "eval") -> None:
    print("| row | micro-AUC min-max | macro-AUC min-max | micro-AUC running | macro-AUC running | w1 / w2 alone (min-max micro) |")
    print("|---|---|---|---|---|---|")
    for name, label in ROWS:
        path = Path(root) / sub / name / "report.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())["results"]
        comps = " / ".join(pct(v["micro_auc"]) for v in r["minmax"]["components"].values())
        print(f"| {label} | {pct(r['minmax']['micro_auc'])} | {pct(r['minmax']['macro_auc'])} | "
              f"{pct(r['running']['micro_auc'])} | {pct(r['running']['macro_auc'])} | {comps} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
