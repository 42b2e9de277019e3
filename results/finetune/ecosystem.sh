#!/usr/bin/env bash
# The fine-tuned model through the ecosystem: export with its card (base model named), reload with local-dir: and,
# offline, hf-hub: (from an HF cache filled by `export --to-hf-cache`), and timm's validate.py through our launcher
# against `timm-identity evaluate` on the full CIFAR-100 test set (20 superclasses).
# Usage: results/finetune/ecosystem.sh RUN CIFAR100_DIR TIMM_SRC OUT
#   RUN: a train-cifar fine-tuning run folder (e.g. runs/finetune/coarse_pretrained_4000)
set -euo pipefail
run=${1:?usage: ecosystem.sh RUN CIFAR100_DIR TIMM_SRC OUT}; data=${2:?}; timm_src=${3:?}; out=${4:?}
name=allconv_resnet_cifar_w16_d3.cifar100_coarse_ft_cifar10
repo=timm-identity/$name
mkdir -p "$out"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export HF_HUB_CACHE=$work/hf_cache    # a private cache: nothing else on the machine is touched

timm-identity export "$run" --arch "$name" --output "$work/export" --to-hf-cache
cp "$work/export/README.md" "$out/model_card.md"; cp "$work/export/config.json" "$out/config.json"
timm-identity evaluate "$work/export" --data-dir "$data" --output "$out/evaluate_local_dir.json" > /dev/null
HF_HUB_OFFLINE=1 timm-identity evaluate "hf-hub:$repo" --data-dir "$data" --output "$out/evaluate_hf_hub.json" > /dev/null
HF_HUB_OFFLINE=1 python - "$repo" "$work/export" <<'EOF' | tee "$out/reload.txt"
import sys, torch, timm, timm_identity  # noqa: F401
from huggingface_hub import ModelCard
x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
a = timm.create_model('hf-hub:' + sys.argv[1], pretrained=True).eval()
b = timm.create_model('local-dir:' + sys.argv[2], pretrained=True).eval()
with torch.no_grad():
    same = torch.equal(a(x), b(x))
base = ModelCard.load(sys.argv[2] + '/README.md').data.base_model
print(f"hf-hub:{sys.argv[1]} (offline) and local-dir: give identical logits: {same}; "
      f"{a.num_classes} classes; the card's base_model: {base}")
assert same and base
EOF
timm-identity shards cifar "$data" --dataset cifar100 --label-type coarse --splits test --out "$work/shards" --no-progress
timm-identity run-script "$timm_src/validate.py" --data-dir "$work/shards" --dataset wds/cifar100_coarse --split test \
    --model "local-dir:$work/export" --pretrained --device cpu -b 500 -j 2 --results-file "$out/validate.csv" \
    2>&1 | grep -E "Acc@1|Loss" | tail -2 | tee "$out/validate.log"
python - "$out" <<'EOF' | tee "$out/comparison.txt"
import csv, json, sys
out = sys.argv[1]
ours = json.load(open(f'{out}/evaluate_local_dir.json'))
hub = json.load(open(f'{out}/evaluate_hf_hub.json'))
row = next(csv.DictReader(open(f'{out}/validate.csv')))
print(f"timm-identity evaluate (local-dir): top-1 {ours['top1']:.2f} %, top-5 {ours['top5']:.2f} % on "
      f"{ours['num_images']:,} images ({ours['dataset']}, {ours['label_type']} labels)")
print(f"timm-identity evaluate (hf-hub:, offline): top-1 {hub['top1']:.2f} %, top-5 {hub['top5']:.2f} %")
print(f"timm validate.py (launcher, webdataset shards): top-1 {float(row['top1']):.2f} %, top-5 {float(row['top5']):.2f} %")
assert ours['top1'] == hub['top1'] and abs(ours['top1'] - float(row['top1'])) < 1e-3  # validate.py rounds to 4 places
EOF
