#!/usr/bin/env bash
# Fine-tuning from allconv_resnet_cifar_w16_d3.cifar10 against training from scratch and a linear probe,
# on CIFAR-100 (100 classes) and its 20 superclasses, at 1,000 and 4,000 steps. One run at a time (timed runs).
# Usage: results/finetune/run.sh CIFAR100_DIR [RUNS_DIR]   (CIFAR100_DIR: official cifar-100-python release)
# LABELS, BUDGETS, STARTS (environment) choose a subset, e.g. the long budget:
#   LABELS=fine BUDGETS=12000 STARTS="pretrained scratch" results/finetune/run.sh cifar-100-python
set -euo pipefail
data=${1:?usage: run.sh CIFAR100_DIR [RUNS_DIR]}
runs=${2:-runs/finetune}
tag=allconv_resnet_cifar_w16_d3.cifar10
common=(--dataset cifar100 --data-dir "$data" --model allconv_resnet_cifar_w16_d3 --model-kwargs head=linear
        --recipe fast_cpu --channels-last --no-progress --keep-checkpoints 1)
for labels in ${LABELS:-fine coarse}; do
  for steps in ${BUDGETS:-1000 4000}; do
    every=$((steps / 8))
    for start in ${STARTS:-pretrained scratch probe}; do
      case $start in
        pretrained) init=(--init-from "$tag") ;;
        scratch) init=() ;;
        probe) init=(--init-from "$tag" --freeze-backbone) ;;
      esac
      out="$runs/${labels}_${start}_${steps}"
      [[ -f "$out/summary.json" ]] && continue
      /usr/bin/time -f "%e s wall, %M KB peak RSS" timm-identity train-cifar "${common[@]}" --label-type "$labels" \
        "${init[@]}" --steps "$steps" --eval-every "$every" --time-limit $((steps / 300 + 3)) --out-dir "$out"
    done
  done
done
