#!/usr/bin/env bash
# Train allconv_resnet_imagenet with the paper's ImageNet recipe through timm's own, unmodified train.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

usage() {
    cat <<EOF
Usage: tools/train_imagenet.sh --train-py PATH --data-dir DIR [options] [-- extra train.py args]

Runs timm's train.py through our launcher (torchrun = python -m torch.distributed.run), on one node:
  torchrun --standalone --nproc_per_node=N -m timm_identity.run_script PATH \\
      -c configs/imagenet_paper.yaml --data-dir DIR -b GLOBAL_BATCH/(N*M) --device DEV --output OUT [extra]
on M nodes, the same command on each with its own --node-rank:
  torchrun --nnodes=M --node_rank=R --master_addr=HOST --master_port=PORT --nproc_per_node=N -m ... PATH ...
or with a c10d rendezvous (the very same command on every node; ranks assigned by torchrun):
  torchrun --nnodes=M --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT --rdzv_id=ID --nproc_per_node=N -m ... PATH ...

The launcher (python -m timm_identity.run_script) registers our models in every process, lets train.py's DDP
run on CPU (gloo) as well as on GPUs (nccl), and first checks the shards against the N*M processes and the
loader workers (python -m timm_identity.run_script --check ...; a layout timm's reader would miscount in
distributed validation, or starve a training worker, is refused before anything starts).

Options:
  --train-py PATH      timm's train.py (default: \$TIMM_TRAIN_PY). It is not in the pip package.
  --data-dir DIR       ImageNet webdataset shards with _info.json, made by
                         timm-identity shards imagenet /data/imagenet --out DIR
  --nproc N            processes on this node = its GPUs (default 8, the paper's 8 x 32); on CPU, processes
                       that train together over gloo
  --device DEV         train.py --device (default cuda; cpu for a smoke run on a machine without CUDA)
  --nnodes M           machines (default 1, with --standalone). The paper used 6 machines of 8 K40s with
                       asynchronous SGD; train.py is synchronous DDP.
  --node-rank R        this machine's rank, 0..M-1 (static rendezvous; needs --master)
  --master HOST:PORT   node 0's address and a free port (torchrun --master_addr / --master_port)
  --rdzv-endpoint HOST:PORT
                       c10d rendezvous instead of --node-rank/--master (--rdzv-id ID names the job,
                       default timm_identity_imagenet)
  --global-batch B     global batch, split evenly over all processes of all nodes (default 256, the paper's)
  --config YAML        train.py args file (default configs/imagenet_paper.yaml)
  --output DIR         where train.py writes its run folder (default ./output/imagenet)
  --dry-run            print the command and exit
  -h, --help           this text
Anything after -- goes to train.py unchanged (e.g. -- --amp --amp-dtype bfloat16 --pin-mem --resume CKPT).

CPU smoke run (two processes, a tiny net, one epoch):
  tools/train_imagenet.sh --train-py timm-src/train.py --data-dir SHARDS --device cpu --nproc 2 \\
      --global-batch 8 -- --epochs 1 -j 1 --no-prefetcher \\
      --model-kwargs 'depths=(1,1,1,1,1)' 'widths=(8,8,8,8,8)' stem_chs=8

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
DEVICE=cuda
NNODES=1
NODE_RANK=""
MASTER=""
RDZV_ENDPOINT=""
RDZV_ID=""
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
        --device) [[ $# -ge 2 ]] || die "--device needs a value"; DEVICE="$2"; shift 2 ;;
        --nnodes) [[ $# -ge 2 ]] || die "--nnodes needs a value"; NNODES="$2"; shift 2 ;;
        --node-rank) [[ $# -ge 2 ]] || die "--node-rank needs a value"; NODE_RANK="$2"; shift 2 ;;
        --master) [[ $# -ge 2 ]] || die "--master needs a value"; MASTER="$2"; shift 2 ;;
        --rdzv-endpoint) [[ $# -ge 2 ]] || die "--rdzv-endpoint needs a value"; RDZV_ENDPOINT="$2"; shift 2 ;;
        --rdzv-id) [[ $# -ge 2 ]] || die "--rdzv-id needs a value"; RDZV_ID="$2"; shift 2 ;;
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
[[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || die "--nnodes must be a positive integer, got '$NNODES'"
WORLD=$((NPROC * NNODES))
(( GLOBAL_BATCH % WORLD == 0 )) || die "--global-batch $GLOBAL_BATCH is not divisible by the $WORLD processes (--nproc $NPROC x --nnodes $NNODES)"
if [[ "$NNODES" == 1 ]]; then
    [[ -z "$NODE_RANK$MASTER$RDZV_ENDPOINT$RDZV_ID" ]] || die "--node-rank, --master and --rdzv-* are for --nnodes > 1"
    LAUNCH=(--standalone)
elif [[ -n "$RDZV_ENDPOINT" ]]; then
    [[ -z "$NODE_RANK$MASTER" ]] || die "--rdzv-endpoint replaces --node-rank/--master: pass one or the other"
    [[ "$RDZV_ENDPOINT" =~ ^[^:]+:[0-9]+$ ]] || die "--rdzv-endpoint must be HOST:PORT, got '$RDZV_ENDPOINT'"
    LAUNCH=("--nnodes=$NNODES" --rdzv_backend=c10d "--rdzv_endpoint=$RDZV_ENDPOINT" "--rdzv_id=${RDZV_ID:-timm_identity_imagenet}")
else
    [[ -n "$NODE_RANK" && -n "$MASTER" ]] || die "--nnodes $NNODES needs --node-rank R and --master HOST:PORT (or --rdzv-endpoint HOST:PORT)"
    { [[ "$NODE_RANK" =~ ^[0-9]+$ ]] && (( NODE_RANK < NNODES )); } || die "--node-rank must be 0..$((NNODES - 1)), got '$NODE_RANK'"
    [[ "$MASTER" =~ ^[^:]+:[0-9]+$ ]] || die "--master must be HOST:PORT, got '$MASTER'"
    LAUNCH=("--nnodes=$NNODES" "--node_rank=$NODE_RANK" "--master_addr=${MASTER%:*}" "--master_port=${MASTER##*:}")
fi
# find the package without importing it (an import of torch + timm takes seconds)
"$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("timm_identity") is None)' 2>/dev/null \
    || die "$PYTHON cannot import timm_identity (install this package, or set PYTHON)"

TRAIN_ARGS=(-c "$CONFIG" --data-dir "$DATA_DIR" -b "$((GLOBAL_BATCH / WORLD))" --device "$DEVICE"
            --output "$OUTPUT" ${EXTRA[@]+"${EXTRA[@]}"})
CMD=("$PYTHON" -m torch.distributed.run "${LAUNCH[@]}" "--nproc_per_node=$NPROC"
     -m timm_identity.run_script "$TRAIN_PY" "${TRAIN_ARGS[@]}")
echo "+ ${CMD[*]}" >&2
if [[ "$DRY_RUN" == 1 ]]; then exit 0; fi
# the shards against all WORLD processes, once, before torchrun starts any (one line and exit 2 if refused)
"$PYTHON" -m timm_identity.run_script --check --world-size "$WORLD" "$TRAIN_PY" "${TRAIN_ARGS[@]}" || exit $?
exec "${CMD[@]}"
