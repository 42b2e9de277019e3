#!/usr/bin/env bash
# The GPU path end to end, in minutes: train-cifar (bf16, channels_last, torch.compile) -> evaluate -> export ->
# pretrained=True -> timm's train.py under torchrun -> the step benchmark. The same script rehearses on CPU with
# --device cpu --tiny (CI runs it so); only the device and the sizes differ.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python3}"

usage() {
    cat <<EOF
Usage: tools/gpu_check.sh --data-dir CIFAR10 --out DIR [options]

Steps (each timed; the first failure stops the script with its exit code):
  1 train      timm-identity train-cifar: the Table 1 net (allconv_resnet_cifar), --steps updates of the
               paper's recipe with --amp bf16 --channels-last --compile, one evaluation and checkpoint at the end
  2 evaluate   timm-identity evaluate of that run on the full test set (bf16, channels_last)
  3 export     timm-identity export -> a Hub-form folder
  4 reload     timm.create_model('local-dir:...', pretrained=True) on the device: weights equal the file,
               logits finite
  5 shards     timm-identity shards cifar (test split as equal shards, exact distributed validation)
  6 train.py   timm's train.py through the launcher under torchrun, --nproc processes, one short epoch
               (bf16 autocast, channels_last), validation on the whole test split (skipped, and said so,
               without --train-py)
  7 benchmark  benchmarks/train_step.py: images/s of one training step (and MFU for the full net)
Results: DIR/gpu_check.json (every step's seconds and status, the device, the test accuracy, the step speed)
and each step's output in DIR/<step>.log.

Options:
  --data-dir DIR     CIFAR-10 python release (cifar-10-batches-py, or the archive)
  --out DIR          result folder (must not exist)
  --device DEV       cuda (default) or cpu
  --steps N          train-cifar updates (default 300)
  --nproc N          train.py processes (default 1; one per GPU)
  --train-py PATH    timm's train.py (default \$TIMM_TRAIN_PY; not in the pip package)
  --peak-tflops X    the device's peak, for the benchmark's MFU (e.g. 989: an H200's dense bf16; default: no MFU)
  --no-verify-md5    for re-packed CIFAR archives (passed to train-cifar, evaluate, shards)
  --tiny             tiny net and sizes, for a CPU rehearsal of every step
  -h, --help         this text

CPU rehearsal (what CI runs, with a tiny official-format CIFAR-10):
  tools/gpu_check.sh --data-dir CIFAR10 --out /tmp/gpu_check --device cpu --tiny --train-py timm-src/train.py
EOF
}

die() { echo "gpu_check.sh: error: $*" >&2; exit 2; }

DATA_DIR="" OUT="" DEVICE=cuda STEPS=300 NPROC=1 TRAIN_PY="${TIMM_TRAIN_PY:-}" PEAK="" TINY=0 MD5=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --data-dir) [[ $# -ge 2 ]] || die "--data-dir needs a value"; DATA_DIR="$2"; shift 2 ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a value"; OUT="$2"; shift 2 ;;
        --device) [[ $# -ge 2 ]] || die "--device needs a value"; DEVICE="$2"; shift 2 ;;
        --steps) [[ $# -ge 2 ]] || die "--steps needs a value"; STEPS="$2"; shift 2 ;;
        --nproc) [[ $# -ge 2 ]] || die "--nproc needs a value"; NPROC="$2"; shift 2 ;;
        --train-py) [[ $# -ge 2 ]] || die "--train-py needs a value"; TRAIN_PY="$2"; shift 2 ;;
        --peak-tflops) [[ $# -ge 2 ]] || die "--peak-tflops needs a value"; PEAK="$2"; shift 2 ;;
        --no-verify-md5) MD5=(--no-verify-md5); shift ;;
        --tiny) TINY=1; shift ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ -n "$DATA_DIR" ]] || die "--data-dir is required (the CIFAR-10 python release)"
[[ -e "$DATA_DIR" ]] || die "--data-dir $DATA_DIR does not exist"
[[ -n "$OUT" ]] || die "--out is required"
[[ ! -e "$OUT" ]] || die "--out $OUT exists; give a new folder"
[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive integer, got '$STEPS'"
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "--nproc must be a positive integer, got '$NPROC'"
[[ -z "$TRAIN_PY" || -f "$TRAIN_PY" ]] || die "train.py not found: $TRAIN_PY"
[[ "$DEVICE" == cuda* || "$DEVICE" == cpu ]] || die "--device must be cuda, cuda:N or cpu, got '$DEVICE'"
# find the package without importing it (an import of torch + timm takes seconds)
"$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("timm_identity") is None)' 2>/dev/null \
    || die "$PYTHON cannot import timm_identity (install this package, or set PYTHON)"

if [[ "$TINY" == 1 ]]; then
    MODEL_KWARGS=(--model-kwargs 'depths=(1,1,1)' 'widths=(8,16,32)' stem_chs=8)
    BATCH=16 EVAL_SHARDS=4 TRAIN_SAMPLES=32 BENCH=(--batch-size 8 --iters 2 --warmup 1 --num-images 64) WORKERS=1
else
    MODEL_KWARGS=() BATCH=128 EVAL_SHARDS=16 TRAIN_SAMPLES=8192 BENCH=(--batch-size 128 512 --iters 30) WORKERS=4
fi
CLI=("$PYTHON" -m timm_identity)
mkdir -p "$OUT"
STEPS_TSV="$OUT/.steps.tsv"
: > "$STEPS_TSV"

step() {  # step NAME COMMAND...: run it, log its output to OUT/NAME.log, record status and seconds
    local name="$1"; shift
    echo "== $name: $*" >&2
    local start rc=0
    start=$(date +%s%N)
    "$@" > "$OUT/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000 ))" >> "$STEPS_TSV"
    if [[ "$rc" != 0 ]]; then
        tail -n 30 "$OUT/$name.log" >&2
        summarize
        echo "gpu_check.sh: step '$name' failed (exit $rc); its output: $OUT/$name.log" >&2
        exit "$rc"
    fi
}

summarize() {
    "$PYTHON" - "$OUT" "$DEVICE" <<'EOF'
import json, os, sys
out, device = sys.argv[1], sys.argv[2]
steps = []
for line in open(os.path.join(out, '.steps.tsv')):
    name, rc, seconds = line.rstrip('\n').split('\t')
    steps.append({'step': name, 'status': 'ok' if rc == '0' else ('skipped' if rc == 'skipped' else f'exit {rc}'),
                  'seconds': round(int(seconds) / 1000, 1)})
result = {'device': device, 'steps': steps}
try:
    ev = json.load(open(os.path.join(out, 'evaluate.json')))
    result.update(device_name=ev.get('device'), test_top1=ev.get('top1'), test_images=ev.get('num_images'))
except (OSError, ValueError):
    pass
try:
    result['train_step'] = [json.loads(l) for l in open(os.path.join(out, 'train_step.jsonl')) if l.strip()]
except (OSError, ValueError):
    pass
with open(os.path.join(out, 'gpu_check.json'), 'w') as f:
    json.dump(result, f, indent=1)
for s in steps:
    print(f"{s['step']:<10} {s['status']:<8} {s['seconds']:>8.1f} s")
EOF
}

step train "${CLI[@]}" train-cifar --data-dir "$DATA_DIR" ${MD5[@]+"${MD5[@]}"} --model allconv_resnet_cifar \
    ${MODEL_KWARGS[@]+"${MODEL_KWARGS[@]}"} --batch-size "$BATCH" --steps "$STEPS" --eval-every "$STEPS" \
    --amp bf16 --channels-last --compile --device "$DEVICE" --out-dir "$OUT/train" --no-progress
step evaluate "${CLI[@]}" evaluate "$OUT/train" --data-dir "$DATA_DIR" ${MD5[@]+"${MD5[@]}"} --device "$DEVICE" \
    --amp bf16 --channels-last --output "$OUT/evaluate.json"
step export "${CLI[@]}" export "$OUT/train" --tag gpu_check --output "$OUT/export"
step reload "$PYTHON" -c "
import sys, torch, timm, timm_identity
from safetensors.torch import load_file
model = timm.create_model('local-dir:' + sys.argv[1], pretrained=True).to(sys.argv[2]).eval()
saved = load_file(sys.argv[1] + '/model.safetensors')
assert all(torch.equal(v.cpu(), saved[k]) for k, v in model.state_dict().items()), 'weights differ from the file'
with torch.no_grad():
    logits = model(torch.randn(8, 3, 32, 32, device=sys.argv[2]))
assert torch.isfinite(logits).all(), 'non-finite logits'
print('reloaded', sys.argv[1], 'on', sys.argv[2], tuple(logits.shape))
" "$OUT/export" "$DEVICE"
step shards "${CLI[@]}" shards cifar "$DATA_DIR" ${MD5[@]+"${MD5[@]}"} --out "$OUT/shards" --eval-shards "$EVAL_SHARDS" \
    --no-progress
if [[ -n "$TRAIN_PY" ]]; then
    AMP=()
    if [[ "$DEVICE" == cuda* ]]; then AMP=(--amp --amp-dtype bfloat16); fi
    step train.py "$PYTHON" -m torch.distributed.run --standalone "--nproc_per_node=$NPROC" \
        -m timm_identity.run_script "$TRAIN_PY" -c "$REPO/configs/cifar10_timm_train.yaml" \
        --data-dir "$OUT/shards" --device "$DEVICE" ${MODEL_KWARGS[@]+"${MODEL_KWARGS[@]}"} --epochs 1 \
        --train-num-samples "$TRAIN_SAMPLES" -b "$BATCH" -j "$WORKERS" ${AMP[@]+"${AMP[@]}"} --channels-last \
        --output "$OUT/timm" --experiment gpu_check --log-interval 10
else
    echo "== train.py: SKIPPED (no --train-py / TIMM_TRAIN_PY: timm's train.py is not in the pip package)" >&2
    printf 'train.py\tskipped\t0\n' >> "$STEPS_TSV"
fi
PEAK_ARGS=()
if [[ -n "$PEAK" ]]; then PEAK_ARGS=(--peak-tflops "$PEAK"); fi
step benchmark "$PYTHON" "$REPO/benchmarks/train_step.py" --device "$DEVICE" --model allconv_resnet_cifar \
    ${MODEL_KWARGS[@]+"${MODEL_KWARGS[@]}"} "${BENCH[@]}" --amp bf16 --channels-last --compile \
    ${PEAK_ARGS[@]+"${PEAK_ARGS[@]}"} --output "$OUT/train_step.jsonl"
summarize
rm -f "$STEPS_TSV"
echo "gpu_check.sh: all steps done; $OUT/gpu_check.json" >&2
