#!/usr/bin/env bash
# The Ped2 comparison (bench/RESULTS.md "Ped2 table"), one row per call: train -> export -> eval.
# Usage: bench/ped2_table.sh ROW [ROW ...]   rows: ae spatial-pa patch skip-frame gaussian learned-noise
#                                                  temporal temporal-nopa full, or eval-BUNDLE (evaluation only)
# SCHEDULE=cpu (default): `vad train --schedule cpu` (128x128, widths 48/64/128, 12 epochs in a 50-minute budget),
#   exported with offline.learn's CPU_RECIPE scoring (spatial 16-px block_max, flow frame mean, both pooled over the
#   window), `vad eval --protocol both` (stream + paper; report.json per row).
# SCHEDULE=reduced (CPU, session 2): 64x64, window 16, train stride 8, 3 epochs, batch 8, lr 1e-3, widths (48,64,128).
# SCHEDULE=reduced-long (CPU): the same with train stride 2 and 10 epochs.
# SCHEDULE=paper (GPU): 256x256, stride 1, 25 epochs, batch 24.
set -euo pipefail
cd "$(dirname "$0")/.."
VAD=${VAD:-.venv/bin/vad}
DATA=${DATA:-../shared/data/ped2}
OUT=${OUT:-runs/ped2}
EXPORT=()
EVAL=(--config bench/ped2_eval.yaml --batch 16)
if [[ "${SCHEDULE:-cpu}" == cpu ]]; then
  SCHED=(--schedule cpu)
  FLOWCLIP=5.0
  EXPORT=(--scoring reduction_spatial=block_max --scoring reduction_temporal=frame --scoring block=16 --scoring pool=window)
  EVAL=(--protocol both)
elif [[ "${SCHEDULE:-cpu}" == paper ]]; then
  SCHED=(--set data.size=256 --set data.train_stride=1 --set train.epochs=25 --set train.batch_size=24)
  FLOWCLIP=10.0
elif [[ "${SCHEDULE:-cpu}" == reduced-long ]]; then
  SCHED=(--set data.size=64 --set data.train_stride=2 --set train.epochs=10 --set train.batch_size=8 --set train.lr=1e-3
         --set "model.channels=[48,64,128]")
  FLOWCLIP=2.5
else
  SCHED=(--set data.size=64 --set data.train_stride=8 --set train.epochs=3 --set train.batch_size=8 --set train.lr=1e-3
         --set "model.channels=[48,64,128]")
  FLOWCLIP=2.5  # flow in pixels shrinks with the frame: 10 px/frame at 256x256 ~ 2.5 at 64x64
fi
mkdir -p "$OUT/logs"

train() {  # train NAME ARGS...
  local name=$1; shift
  "$VAD" train --data "$DATA" --out "$OUT/$name" --no-progress "${SCHED[@]}" "$@" >"$OUT/logs/$name.train.log" 2>&1
}
bundle_eval() {  # bundle_eval NAME EXPORT-ARGS...
  local name=$1; shift
  "$VAD" export --out "$OUT/bundles/$name" "${EXPORT[@]}" "$@" >"$OUT/logs/$name.export.log" 2>&1
  evaluate "$name"
}
evaluate() {  # evaluate NAME: cpu: both protocols; older schedules: paper protocol (bench/ped2_eval.yaml)
  "$VAD" eval --bundle "$OUT/bundles/$1" --data "$DATA" "${EVAL[@]}" --out "$OUT/eval/$1" \
    2>&1 | tee "$OUT/logs/$1.eval.log" | tail -3
}

for row in "$@"; do
  case $row in
    ae)            train ae --target spatial --set pa.spatial=none; bundle_eval ae --spatial "$OUT/ae" ;;
    spatial-pa)    train spatial-pa --target spatial --set pa.spatial=ldm --set pa.mask=object
                   bundle_eval spatial-pa --spatial "$OUT/spatial-pa" ;;
    patch)         train patch --target spatial --set pa.spatial=patch; bundle_eval patch --spatial "$OUT/patch" ;;
    skip-frame)    train skip-frame --target spatial --set pa.spatial=skip_frame; bundle_eval skip-frame --spatial "$OUT/skip-frame" ;;
    gaussian)      train gaussian --target spatial --set pa.spatial=gaussian --set pa.p_spatial=0.5
                   bundle_eval gaussian --spatial "$OUT/gaussian" ;;
    learned-noise) train learned-noise --target spatial --set pa.spatial=learned_noise --set pa.p_spatial=0.5
                   bundle_eval learned-noise --spatial "$OUT/learned-noise" ;;
    temporal)      train temporal --target temporal --set pa.temporal=flow_mixup --set flow.clip=$FLOWCLIP ;;
    temporal-nopa) train temporal-nopa --target temporal --set pa.temporal=none --set flow.clip=$FLOWCLIP
                   bundle_eval ae-temporal-nopa --spatial "$OUT/ae" --temporal "$OUT/temporal-nopa" ;;
    full)          train discriminator --target discriminator   # no CLIP weights here: records "off"
                   bundle_eval full --spatial "$OUT/spatial-pa" --temporal "$OUT/temporal" --discriminator "$OUT/discriminator" ;;
    eval-*)        evaluate "${row#eval-}" ;;  # re-evaluate an exported bundle only
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  echo "row $row done: $(date -u +%FT%TZ)"
done
