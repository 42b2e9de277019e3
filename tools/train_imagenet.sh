#!/usr/bin/env bash
# Train allconv_resnet_imagenet with the paper's ImageNet recipe through timm's own, unmodified train.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

usage() {
    cat <<EOF
Usage: tools/train_imagenet.sh --train-py PATH --data-dir DIR [options] [-- extra train.py args]

Runs (torchrun = python -m torch.distributed.run):
  torchrun --standalone --nproc_per_node=N PATH --device-modules timm_identity \\
      -c configs/imagenet_paper.yaml --data-dir DIR -b GLOBAL_BATCH/N --output OUT [extra args]

--device-modules timm_identity makes train.py import our package, which registers the models.

Options:
  --train-py PATH      timm's train.py (default: \$TIMM_TRAIN_PY). It is not in the pip package.
  --data-dir DIR       ImageNet webdataset shards with _info.json, made by
                         timm-identity shards imagenet /data/imagenet --out DIR
  --nproc N            processes = GPUs on this node (default 8, the paper's 8 x 32)
  --global-batch B     global batch, split evenly over the processes (default 256, the paper's)
  --config YAML        train.py args file (default configs/imagenet_paper.yaml)
  --output DIR         where train.py writes its run folder (default ./output/imagenet)
  --dry-run            print the command and exit
  -h, --help           this text
Anything after -- goes to train.py unchanged (e.g. -- --amp --amp-dtype bfloat16 --pin-mem --resume CKPT).

Getting the matching train.py: clone timm at the tag of the installed timm version, e.g.
  TIMM_VERSION=\$($PYTHON -c 'import timm; print(timm.__version__)')
  git clone --depth 1 --branch v\$TIMM_VERSION https://github.com/huggingface/pytorch-image-models timm-src
  export TIMM_TRAIN_PY=\$PWD/timm-src/train.py
(train.py and the installed timm library must come from the same version; a train.py from another
version may pass arguments the library does not know.)

Environment: PYTHON (default python3) must be able to import timm_identity.
EOF
}

die() { echo "train_imagenet.sh: error: $*" >&2; echo "Run tools/train_imagenet.sh --help for usage." >&2; exit 2; }

TRAIN_PY="${TIMM_TRAIN_PY:-}"
DATA_DIR=""
NPROC=8
GLOBAL_BATCH=256
CONFIG="$HERE/../configs/imagenet_paper.yaml"
OUTPUT="./output/imagenet"
DRY_RUN=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --train-py) [[ $# -ge 2 ]] || die "--train-py needs a value"; TRAIN_PY="$2"; shift 2 ;;
        --data-dir) [[ $# -ge 2 ]] || die "--data-dir needs a value"; DATA_DIR="$2"; shift 2 ;;
        --nproc) [[ $# -ge 2 ]] || die "--nproc needs a value"; NPROC="$2"; shift 2 ;;
        --global-batch) [[ $# -ge 2 ]] || die "--global-batch needs a value"; GLOBAL_BATCH="$2"; shift 2 ;;
        --config) [[ $# -ge 2 ]] || die "--config needs a value"; CONFIG="$2"; shift 2 ;;
        --output) [[ $# -ge 2 ]] || die "--output needs a value"; OUTPUT="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown argument '$1' (train.py arguments go after --)" ;;
    esac
done

[[ -n "$TRAIN_PY" ]] || die "no train.py: pass --train-py PATH or set TIMM_TRAIN_PY (see --help for how to get it)"
[[ -f "$TRAIN_PY" ]] || die "train.py not found: $TRAIN_PY"
[[ -n "$DATA_DIR" ]] || die "--data-dir is required (ImageNet shards from 'timm-identity shards imagenet')"
[[ -d "$DATA_DIR" ]] || die "--data-dir $DATA_DIR is not a folder"
[[ -f "$DATA_DIR/_info.json" ]] || die "$DATA_DIR has no _info.json: not a shard folder from 'timm-identity shards imagenet'"
[[ -f "$CONFIG" ]] || die "config not found: $CONFIG"
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "--nproc must be a positive integer, got '$NPROC'"
[[ "$GLOBAL_BATCH" =~ ^[1-9][0-9]*$ ]] || die "--global-batch must be a positive integer, got '$GLOBAL_BATCH'"
(( GLOBAL_BATCH % NPROC == 0 )) || die "--global-batch $GLOBAL_BATCH is not divisible by --nproc $NPROC"
"$PYTHON" -c 'import timm_identity' 2>/dev/null || die "$PYTHON cannot import timm_identity (install this package, or set PYTHON)"

CMD=("$PYTHON" -m torch.distributed.run --standalone "--nproc_per_node=$NPROC" "$TRAIN_PY"
     --device-modules timm_identity -c "$CONFIG" --data-dir "$DATA_DIR"
     -b "$((GLOBAL_BATCH / NPROC))" --output "$OUTPUT" ${EXTRA[@]+"${EXTRA[@]}"})
echo "+ ${CMD[*]}" >&2
if [[ "$DRY_RUN" == 1 ]]; then exit 0; fi
exec "${CMD[@]}"
