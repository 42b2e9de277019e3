#!/usr/bin/env bash
# The training step of allconv_resnet_cifar_w16_d3 on this CPU under each setting train-cifar offers:
# eager / channels_last / torch.compile, 1 or 2 threads, batch 64 / 128 / 256. Appends JSON lines to
# benchmarks/cpu_results.jsonl (one per setting); benchmarks/results.md has the table. About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/cpu_results.jsonl}
run() { "$PY" benchmarks/train_step.py --device cpu --model allconv_resnet_cifar_w16_d3 --recipe fast_cpu \
          --warmup 3 --iters 30 --output "$OUT" "$@" | cut -c1-200; }
run --batch-size 128
run --batch-size 128 --channels-last
run --batch-size 128 --channels-last --threads 1
run --batch-size 64 128 256 --channels-last
run --batch-size 128 --channels-last --compile --warmup 5
