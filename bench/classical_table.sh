#!/usr/bin/env bash
# The classical rows of a dataset's table (bench/RESULTS.md), one `vad eval --baseline` per row, both protocols:
# frame difference and TV-L1 flow magnitude, frame mean and block_max, each per frame and pooled over the window.
# Usage: DATA=../shared/data/ped1 OUT=runs/ped1-table bench/classical_table.sh ROW [ROW ...]
#   rows: fd-frame fd-frame-pool fd-block fd-block-pool flow-frame flow-frame-pool flow-block flow-block-pool
#         (flow-*: the cpu schedule's TV-L1 budget, --flow budget=cpu; flow-opencv-*: OpenCV's defaults)
#         fd-block-pool-B / flow-block-pool-B: block side B px (the block-size measurement)
#         any row + "-calwhole": calibrated on the whole training clips (--calibration-fraction 1) instead of 10 % tails
# Each row writes OUT/ROW/report.json and OUT/ROW/row.json (label, kind, command) for bench/ped2_summary.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VAD=${VAD:-.venv/bin/vad}
DATA=${DATA:?set DATA to the dataset folder}
OUT=${OUT:?set OUT to the output folder}
for row in "$@"; do
  args=(--protocol both --size 128 --data "$DATA" --out "$OUT/$row")
  case $row in
    fd-*) args+=(--baseline frame-difference); what="frame difference" ;;
    flow-opencv-*) args+=(--baseline flow-magnitude --flow-backend opencv); what="TV-L1 flow magnitude (OpenCV defaults)" ;;
    flow-*) args+=(--baseline flow-magnitude --flow-backend opencv --flow budget=cpu); what="TV-L1 flow magnitude (cpu budget)" ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  block=16
  [[ $row =~ -block-pool-([0-9]+) ]] && block=${BASH_REMATCH[1]}
  case $row in
    *-frame*) args+=(--reduction frame); red="frame mean" ;;
    *-block*) args+=(--reduction block_max --block "$block"); red="block_max $block" ;;
  esac
  cal=""
  if [[ $row == *-calwhole ]]; then args+=(--calibration-fraction 1); cal=", calibrated on the whole training clips"; fi
  pooled=""
  if [[ $row == *-pool* ]]; then args+=(--pool window); pooled=", window mean"; fi
  mkdir -p "$OUT/$row"
  "$VAD" eval "${args[@]}" 2>&1 | grep -v "it/s\|s/it\|clip/s\|s/clip" | tee "$OUT/$row/eval.log" | tail -4
  python3 - "$OUT/$row/row.json" "$what, $red$pooled, 128 px$cal" "vad eval ${args[*]}" <<'PY'
import json, sys
json.dump({"kind": "classical", "label": sys.argv[2], "command": sys.argv[3]}, open(sys.argv[1], "w"), indent=1)
PY
done
