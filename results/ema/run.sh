#!/usr/bin/env bash
# EMA of the weights (--model-ema, timm's ModelEmaV3) on the shipped recipe (fast_cpu, allconv_resnet_cifar_w16_d3,
# channels_last, fp32), with and without, at two budgets sized to 5 and 15 minutes of 2 CPU cores (steps fixed so
# that the cosine schedule ends; each run evaluates the full test set 4 times). One run at a time (timed runs).
# Usage: results/ema/run.sh CIFAR10_DIR [RUNS_DIR]   (CIFAR10_DIR: official cifar-10-batches-py release;
#        NO_VERIFY_MD5=1 for a re-packed copy whose md5 is not the official one)
set -euo pipefail
data=${1:?usage: run.sh CIFAR10_DIR [RUNS_DIR]}
runs=${2:-runs/ema}
common=(--data-dir "$data" --model allconv_resnet_cifar_w16_d3 --recipe fast_cpu --channels-last --no-progress
        --keep-checkpoints 1)
if [[ -n "${NO_VERIFY_MD5:-}" ]]; then common+=(--no-verify-md5); fi
for steps in ${BUDGETS:-2000 6400}; do
  for ema in no-model-ema model-ema; do
    out="$runs/${ema}_${steps}"
    [[ -f "$out/summary.json" ]] && continue
    /usr/bin/time -f "%e s wall, %M KB peak RSS" timm-identity train-cifar "${common[@]}" --"$ema" \
      --steps "$steps" --eval-every $((steps / 4)) --time-limit $((steps / 250 + 5)) --out-dir "$out"
  done
done
