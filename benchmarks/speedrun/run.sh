#!/usr/bin/env bash
# The speedrun, side by side on one machine: our no-normalisation net (allconv_resnet_cifar_w16_d3, recipe
# speedrun_cpu) and airbench94 (pip install .[speedrun]; run on the CPU by airbench_cpu.py), alternating, one
# run at a time, each a whole schedule of its own length:
#   airbench94 9.9 epochs (its own 94 % run) | ours ~10 minutes | ours at 350 TFLOP (airbench94's budget) |
#   airbench94 5 epochs | ours at 175 TFLOP | ours 36,000 steps (~40 minutes, the length of the fast_cpu weights)
# Then `report.py` makes the table, the verdicts and the plot from what the runs wrote.
# Usage: benchmarks/speedrun/run.sh CIFAR10_DIR [RUNS_DIR]   (CIFAR10_DIR: the official cifar-10-batches-py;
#        NO_VERIFY_MD5=1 for a re-packed copy; AMP=none for float32; ONLY="name ..." runs just those)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:?usage: run.sh CIFAR10_DIR [RUNS_DIR]}
runs=${2:-runs/speedrun}
amp=${AMP:-bf16}
md5=(); if [[ -n "${NO_VERIFY_MD5:-}" ]]; then md5=(--no-verify-md5); fi
mkdir -p "$runs"
wanted() { [[ -z "${ONLY:-}" || " $ONLY " == *" $1 "* ]]; }

airbench() {  # airbench NAME EPOCHS
  wanted "$1" || return 0
  [[ -f "$runs/$1.json" ]] && return 0
  python "$here/airbench_cpu.py" --data-dir "$data" "${md5[@]}" --epochs "$2" --amp "$amp" \
    --work-dir "$runs/.airbench-data" --out "$runs/$1.json"
}

ours() {  # ours NAME STEPS [train-cifar flags]: 4 evaluations, then the flip-TTA evaluation of the final weights
  local name=$1 steps=$2; shift 2
  wanted "$name" || return 0
  [[ -f "$runs/$name/flip.json" ]] && return 0
  timm-identity train-cifar --data-dir "$data" "${md5[@]}" --model allconv_resnet_cifar_w16_d3 \
    --recipe speedrun_cpu --amp "$amp" --channels-last --steps "$steps" --eval-every $((steps / 4)) \
    --keep-checkpoints 1 --no-progress --time-limit $((steps / 400 + 10)) --out-dir "$runs/$name" "$@"
  timm-identity evaluate "$runs/$name" --data-dir "$data" "${md5[@]}" --amp "$amp" --channels-last --flip \
    --output "$runs/$name/flip.json"
}

# 128 images a step, 0.2424 GFLOP a training image: 11,280 steps = 1.444M images = 350 TFLOP (airbench94's 9.9
# epochs: 345) and 5,640 steps = 175 TFLOP (its 5 epochs: 174). ours_10min was sized to 10 minutes at the screens'
# ~1,850 images/s and took 10.6 at the ~1,700 it ran at; ours_175tflop trains in ~7.
airbench airbench94_9.9ep 9.9
ours ours_10min 8400 --warmup-steps 420
ours ours_350tflop 11280
airbench airbench94_5ep 5
ours ours_175tflop 5640 --warmup-steps 282
ours ours_36k 36000 --warmup-steps 1800
