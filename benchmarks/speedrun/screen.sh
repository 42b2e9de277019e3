#!/usr/bin/env bash
# Short screens of recipe changes for allconv_resnet_cifar_w16_d3 (no normalisation), each at the same budget:
# 2,730 updates x 128 = 349,440 training images (7 epochs, 85 TFLOP), bf16 autocast, channels_last, one cosine
# with a 5 % warmup, one evaluation at the end. One run at a time (timed runs).
# Usage: benchmarks/speedrun/screen.sh CIFAR10_DIR [RUNS_DIR]   (NO_VERIFY_MD5=1 for a re-packed copy)
set -euo pipefail
data=${1:?usage: screen.sh CIFAR10_DIR [RUNS_DIR]}
runs=${2:-runs/speedrun-screen}
common=(--data-dir "$data" --model allconv_resnet_cifar_w16_d3 --recipe fast_cpu --amp bf16 --channels-last
        --no-progress --no-plot --keep-checkpoints 1 --time-limit 15)
if [[ -n "${NO_VERIFY_MD5:-}" ]]; then common+=(--no-verify-md5); fi
screen() {  # screen NAME STEPS FLAGS...
  local name=$1 steps=$2; shift 2
  [[ -f "$runs/$name/summary.json" ]] && return 0
  timm-identity train-cifar "${common[@]}" --steps "$steps" --eval-every "$steps" \
    --warmup-steps $((steps / 20)) --out-dir "$runs/$name" "$@" || echo "screen $name: failed (its summary.json says why)"
}
screen base 2730
screen head_linear 2730 --model-kwargs head=linear
screen lr0.2 2730 --lr 0.2                         # diverges (NaN at step 182): no BN, lr 0.2 is past the edge
screen stem_whiten 2730 --stem-init whiten
screen w32_d1 2579 --model-kwargs 'widths=(32,64,128)' 'depths=(1,1,1)'   # 0.2566 GFLOP / image: same 85 TFLOP
screen ls0.2_ema 2730 --label-smoothing 0.2 --model-ema --model-ema-decay 0.999
screen lr0.2_agc 2730 --lr 0.2 --clip-grad 0.04 --clip-mode agc
screen lr0.15 2730 --lr 0.15
screen fixup_lr0.2 2730 --lr 0.2 --model-kwargs init=fixup            # Fixup: made to train without BN at BN's lr
screen gate_lr0.2 2730 --lr 0.2 --model-kwargs branch_gate=True       # SkipInit: each branch gated by a scalar from 0
